"""SendEmail: store the email (attachments into the blob store first) and queue its dispatch.

The email id is the idempotency key, and it names one email: a SendEmail whose
id is already stored is a no-op when it says the same (the same content hash,
see ``emailer.domain.fingerprint``) and is refused with ``EmailIdReused`` when
it says something else (the gateway answers 409; on the bus the message goes to
the error queue with that reason). The first email stands either way.
"""

from __future__ import annotations

import structlog

from contracts import SendEmail
from emailer.domain import Email, EmailStatus, RetryPolicy
from emailer.domain.fingerprint import content_hash as hash_of
from emailer.domain.messages import content_of, recipients_of
from handlers.attachments import DEFAULT_LIMITS, AttachmentLimits, accept_attachments, reference
from handlers.ports import BlobStore, Clock
from handlers.suppressions import leave_out_suppressed
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


def send_email(
    command: SendEmail,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    clock: Clock,
    policy: RetryPolicy,
    limits: AttachmentLimits = DEFAULT_LIMITS,
) -> None:
    """Runs inside the caller's transaction; the caller commits (and records the inbox).

    Raises ``EmailIdReused`` if the email id is stored with a different content.
    """
    existing = uow.emails.get(command.email_id)
    if existing is not None:
        existing.check_resend(content_hash(command))
        log.info("send_email.duplicate_email_id", email_id=command.email_id)
        return
    refs = accept_attachments(command, blobs, uow.blob_refs, limits)
    now = clock.now()
    email = Email.queue(command, refs, now)
    leave_out_suppressed(email, uow.suppressions, now)  # may fail it: every recipient suppressed
    if email.status is EmailStatus.QUEUED:
        email.wake(now, policy)  # due now (no send_at): it asks for its DispatchEmail
    uow.emails.add(email)


def prefetch(commands: list[SendEmail], uow: AbstractUnitOfWork) -> None:
    """A batch looks its email ids (the duplicate check) and its recipients' suppressions up in one go."""
    uow.emails.preload(c.email_id for c in commands)
    uow.suppressions.preload(address.email for c in commands for _, address in c.recipients())


def content_hash(command: SendEmail) -> str:
    """The hash of what the command says, as the email it would become would hash it.

    Attachments count by their bytes' sha256 (the blob key), computed here without
    storing anything, so a refused or duplicate command leaves the blob store alone.
    """
    refs = [reference(a) for a in command.attachments]
    return hash_of(content_of(command), recipients_of(command), refs, command.metadata, command.send_at)
