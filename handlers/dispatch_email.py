"""DispatchEmail: hand a stored email to the provider and record what it said.

Unlike the other handlers this one commits twice, around the provider call:
first the attempt is marked as under way (so no competing worker starts
another), then the outcome is recorded. If the process dies between the two,
the email waits in ``dispatching`` for the provider's callback (the rule is in
``emailer.domain.model``): it is never sent blind a second time.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from contracts import Address, DeliveryReport, DispatchEmail, ReportKind
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.domain import Email, EmailStatus, RetryPolicy
from handlers.errors import ConcurrencyConflict
from handlers.ports import (
    BlobStore,
    Clock,
    Outcome,
    OutgoingAttachment,
    OutgoingEmail,
    Provider,
    SendOutcome,
)
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

OUTCOME_RECORD_ATTEMPTS = 3


def dispatch_email(
    command: DispatchEmail,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
) -> None:
    request = _start_attempt(command.email_id, uow, blobs, provider, clock, policy, breaker)
    if request is None:
        return
    outcome = provider.send(request)
    if outcome.outcome is Outcome.TRANSIENT:
        breaker.record_failure(clock.now())
    else:
        breaker.record_success()
    log.info(
        "dispatch.outcome",
        email_id=command.email_id,
        outcome=outcome.outcome.value,
        status=outcome.status,
        reason=outcome.reason,
    )
    _record_outcome(command.email_id, outcome, uow, provider.name, clock, policy)


def _start_attempt(
    email_id: str,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
) -> OutgoingEmail | None:
    """Mark the attempt in its own transaction; the request to send, or None if nothing to do."""
    with uow:
        email = uow.emails.get(email_id)
        now = clock.now()
        if email is None or not email.is_due(now):
            log.info("dispatch.not_due", email_id=email_id, status=email and email.status.value)
            return None
        retry_at = breaker.allow(now)
        if retry_at is not None:
            email.postpone(retry_at, f"{provider.name} circuit open after repeated failures", now)
            uow.commit()
            return None
        try:
            request = build_request(email, blobs)
        except LookupError as exc:
            email.fail(f"cannot build the message: {exc}", now, provider=provider.name)
            uow.commit()
            return None
        email.start_attempt(now, policy)
        uow.commit()
    return request


def _record_outcome(
    email_id: str,
    outcome: SendOutcome,
    uow: AbstractUnitOfWork,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
) -> None:
    """Record the outcome; a conflicting concurrent change (a callback) is retried on fresh state."""
    for attempt in range(1, OUTCOME_RECORD_ATTEMPTS + 1):
        try:
            with uow:
                email = uow.emails.get(email_id)
                assert email is not None
                apply_outcome(email, outcome, provider, clock, policy)
                uow.commit()
                return
        except ConcurrencyConflict:
            if attempt == OUTCOME_RECORD_ATTEMPTS:
                raise
            log.info("dispatch.record_conflict_retry", email_id=email_id, attempt=attempt)


def apply_outcome(
    email: Email, outcome: SendOutcome, provider: str, clock: Clock, policy: RetryPolicy
) -> None:
    now = clock.now()
    reason = outcome.reason or outcome.outcome.value
    if outcome.outcome is Outcome.ACCEPTED:
        email.delivery_started(provider, outcome.provider_message_id, now)
        if outcome.delivered:
            for report in delivered_reports(email, provider, outcome.provider_message_id, now):
                email.apply_report(report, now)
    elif outcome.outcome is Outcome.REJECTED:
        if email.status is EmailStatus.DISPATCHING:
            email.fail(reason, now, provider=provider, status=outcome.status)
    elif outcome.outcome is Outcome.TRANSIENT:
        email.attempt_failed(provider, reason, now, policy, retry_after=outcome.retry_after)
    else:
        email.attempt_outcome_unknown(provider, reason, now)


def delivered_reports(
    email: Email, provider: str, provider_message_id: str | None, now: datetime
) -> list[DeliveryReport]:
    """A provider whose acceptance is delivery reports it the way a webhook would, per recipient."""
    return [
        DeliveryReport(
            provider=provider,
            provider_event_id=f"{email.id}:{r.address}:delivered",
            email_id=email.id,
            recipient=r.address,
            kind=ReportKind.DELIVERED,
            occurred_at=now,
            provider_message_id=provider_message_id,
        )
        for r in email.recipients
    ]


def build_request(email: Email, blobs: BlobStore) -> OutgoingEmail:
    """The provider-neutral request, with attachment bytes read from the blob store."""
    c = email.content
    by_kind: dict[str, list[Address]] = {"to": [], "cc": [], "bcc": []}
    for r in email.recipients:
        by_kind[r.kind].append(Address(email=r.address, name=r.name))
    attachments = []
    for ref in email.attachments:
        try:
            content = blobs.get(ref.sha256)
        except KeyError as exc:
            raise LookupError(f"attachment {ref.filename!r} ({ref.sha256}) is not in the blob store") from exc
        attachments.append(
            OutgoingAttachment(
                filename=ref.filename,
                content_type=ref.content_type,
                content=content,
                disposition=ref.disposition,
                content_id=ref.content_id,
            )
        )
    return OutgoingEmail(
        email_id=email.id,
        from_=Address.model_validate(c["from"]),
        reply_to=Address.model_validate(c["reply_to"]) if c.get("reply_to") else None,
        to=by_kind["to"],
        cc=by_kind["cc"],
        bcc=by_kind["bcc"],
        subject=c.get("subject"),
        text=c.get("text"),
        html=c.get("html"),
        template_id=c.get("template_id"),
        template_data=c.get("template_data"),
        headers=dict(c.get("headers") or {}),
        categories=list(c.get("categories") or []),
        attachments=attachments,
    )
