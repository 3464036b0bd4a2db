"""DispatchEmail: hand a stored email to the provider and record what it said.

Unlike the other handlers this one commits twice, around the provider call:
first the attempt is marked as under way (so no competing worker starts
another), then the email records the outcome (``Email.record_outcome`` decides
what it means). If the process dies between the two, the email waits in
``dispatching`` until the provider's callback or a lookup of its records settles
it (the rule is in ``emailer.domain.email``; the lookup in ``handlers.reconcile``):
it is never sent blind a second time.

Before the first commit both requests are built, the provider-neutral
``OutgoingEmail`` (attachment bytes from the blob store) and the provider's own
(``Provider.prepare``: the SendGrid body, the MIME message). An email that
cannot be built (a blob gone, a value the provider's builder refuses) fails for
good there, with the reason: it never waits in ``dispatching`` for an attempt
that could not have been made. A blob store that does not answer is not such a
reason: that exception propagates and the message is retried.

The provider may be guarded by a circuit breaker; if so, its "not now" is just
another outcome (postponed) and this handler does not know the breaker exists.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from contracts import Address, DispatchEmail
from emailer.domain import Email, Mailbox, RetryPolicy, SendOutcome
from emailer.retries import conflict_retrying
from handlers.claim_check import outgoing_attachment
from handlers.errors import ConcurrencyConflict
from handlers.ports import BlobStore, Clock, OutgoingEmail, Provider
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

MAX_REASON_CHARS = 1000


def dispatch_email(
    command: DispatchEmail,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    after_provider_call: Callable[[], None] | None = None,
) -> None:
    request = _start_attempt(command.email_id, uow, blobs, provider, clock, policy)
    if request is None:
        return
    outcome = provider.send(request)
    if after_provider_call is not None:
        after_provider_call()  # a test's crash point: the provider may have it, and nothing is recorded yet
    log.info(
        "dispatch.outcome",
        email_id=command.email_id,
        outcome=outcome.outcome.value,
        status=outcome.status,
        reason=outcome.reason,
    )
    record_outcome(command.email_id, outcome, uow, provider.name, clock, policy)


def _start_attempt(
    email_id: str,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
) -> OutgoingEmail | None:
    """Mark the attempt in its own transaction; the request to send, or None if nothing to do.

    Both requests are built first, ours and the provider's own: an email that cannot
    be expressed fails for good with the reason, before any attempt is committed.
    """
    with uow:
        email = uow.emails.get(email_id)
        now = clock.now()
        if email is None or not email.is_due(now):
            log.info("dispatch.not_due", email_id=email_id, status=email and email.status.value)
            return None
        try:
            request = build_request(email, blobs)
        except LookupError as exc:  # a missing blob; a blob store that does not answer is retried
            email.fail(f"cannot build the message: {exc}", now, provider=provider.name)
            uow.commit()
            return None
        refusal = _refusal(provider, request)
        if refusal is not None:
            email.fail(refusal, now, provider=provider.name)
            uow.commit()
            return None
        email.start_attempt(now, policy)
        uow.commit()
    return request


def _refusal(provider: Provider, request: OutgoingEmail) -> str | None:
    """Why the provider cannot build its request for this email, or None if it can."""
    try:
        provider.prepare(request)
    except Exception as exc:  # noqa: BLE001 - building is computation on this email: any error is about it
        reason = f"{provider.name} cannot build a request for this email: {type(exc).__name__}: {exc}"
        return reason[:MAX_REASON_CHARS]
    return None


def record_outcome(
    email_id: str,
    outcome: SendOutcome,
    uow: AbstractUnitOfWork,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
) -> None:
    """Record the outcome; a conflicting concurrent change (a callback) is retried on fresh state."""
    for attempt in conflict_retrying(ConcurrencyConflict):
        with attempt, uow:
            email = uow.emails.get(email_id)
            if email is None:  # pragma: no cover - the attempt was committed; emails are never deleted
                raise LookupError(f"email {email_id} vanished during its dispatch")
            email.record_outcome(outcome, provider, clock.now(), policy)
            uow.commit()


def build_request(email: Email, blobs: BlobStore) -> OutgoingEmail:
    """The provider-neutral request; attachments are streamed from the blob store by the provider."""
    c = email.content
    by_kind: dict[str, list[Address]] = {"to": [], "cc": [], "bcc": []}
    for r in email.sendable_recipients:  # suppressed recipients are never sent to
        by_kind[r.kind].append(Address(email=r.address, name=r.name))
    attachments = [outgoing_attachment(ref, blobs) for ref in email.attachments]
    return OutgoingEmail(
        email_id=email.id,
        from_=_address(c.from_),
        reply_to=_address(c.reply_to) if c.reply_to else None,
        to=by_kind["to"],
        cc=by_kind["cc"],
        bcc=by_kind["bcc"],
        subject=c.subject,
        text=c.text,
        html=c.html,
        template_id=c.template_id,
        template_data=c.template_data,
        headers=dict(c.headers),
        categories=list(c.categories),
        attachments=attachments,
    )


def _address(mailbox: Mailbox) -> Address:
    return Address(email=mailbox.email, name=mailbox.name)
