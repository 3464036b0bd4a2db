"""SendEmail: store the email (attachments into the blob store first) and queue its dispatch."""

from __future__ import annotations

import structlog

from contracts import Attachment as IncomingAttachment
from contracts import SendEmail
from emailer.domain import Attachment, Email, RetryPolicy
from handlers.attachments import DEFAULT_LIMITS, AttachmentLimits, accept_attachments
from handlers.errors import InvalidMessage
from handlers.ports import BlobStore, Clock
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
    """Runs inside the caller's transaction; the caller commits (and records the inbox)."""
    if uow.emails.get(command.email_id) is not None:
        log.info("send_email.duplicate_email_id", email_id=command.email_id)
        return
    refs = accept_attachments(command, blobs, uow.blob_refs, limits)
    now = clock.now()
    context = uow.context  # the command's ids stay with the email (every later message carries them)
    email = Email.queue(command, refs, now, context.correlation_id, context.conversation_id)
    email.wake(now, policy)  # due now (no send_at): it asks for its DispatchEmail
    uow.emails.add(email)


def prefetch(commands: list[SendEmail], uow: AbstractUnitOfWork) -> None:
    """A batch looks its email ids up in one go (the duplicate check)."""
    uow.emails.preload(c.email_id for c in commands)


def store_attachment(attachment: IncomingAttachment, blobs: BlobStore) -> Attachment:
    """Move inline bytes into the blob store (or check a reference) and return the claim check."""
    if attachment.content is not None:
        key = blobs.put(attachment.content, attachment.content_type)
        size = len(attachment.content)
    else:
        assert attachment.sha256 is not None  # the contract guarantees one of the two
        key = attachment.sha256
        found = blobs.size(key)
        if found is None:
            raise InvalidMessage(f"attachment {attachment.filename!r}: no blob {key} in the blob store")
        if attachment.size is not None and attachment.size != found:
            raise InvalidMessage(
                f"attachment {attachment.filename!r}: size {attachment.size} given, blob has {found}"
            )
        size = found
    return Attachment(
        filename=attachment.filename,
        content_type=attachment.content_type,
        disposition=attachment.disposition,
        content_id=attachment.content_id,
        sha256=key,
        size=size,
    )
