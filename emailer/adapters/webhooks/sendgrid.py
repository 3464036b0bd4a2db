"""SendGrid's Event Webhook events, mapped to provider-neutral ``DeliveryReport`` s.

The mapping is plain data (``EVENT_KINDS``, ``BOUNCE_KINDS``), in the manner of
django-anymail: an event type missing from the table becomes an ``unknown``
report, never an error. SendGrid flattens the ``custom_args`` of a message into
each of its events, so our email id arrives as the event's ``email_id`` key.
An event that carries none (mail not sent by Emailer, or a test event from
SendGrid's console) is not ours: ``map_batch`` counts it and moves on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from contracts import DeliveryReport, ReportKind
from contracts.fields import EmailAddress

PROVIDER = "sendgrid"
EMAIL_ID_ARG = "email_id"
"""The custom arg the SendGrid provider adapter sets on every message."""
_EMAIL_ADDRESS: TypeAdapter[str] = TypeAdapter(EmailAddress)

EVENT_KINDS: dict[str, ReportKind] = {
    # SendGrid event  -> Emailer report kind   (public event the email then emits)
    "processed": ReportKind.PROCESSED,  # accepted by SendGrid; settles an unknown outcome
    "delivered": ReportKind.DELIVERED,  # EmailRecipientDelivered
    "deferred": ReportKind.DEFERRED,  # EmailRecipientDeferred (with the attempt count)
    "bounce": ReportKind.BOUNCED,  # EmailRecipientDeliveryFailed, failure by BOUNCE_KINDS
    "dropped": ReportKind.DROPPED,  # EmailRecipientDeliveryFailed failure=dropped, SendGrid's reason
    "open": ReportKind.OPENED,  # EmailRecipientOpened (machine opens flagged)
    "click": ReportKind.CLICKED,  # EmailRecipientClicked
    "spamreport": ReportKind.COMPLAINED,  # EmailRecipientComplained
    "unsubscribe": ReportKind.UNSUBSCRIBED,  # EmailRecipientUnsubscribed
    "group_unsubscribe": ReportKind.UNSUBSCRIBED,  # EmailRecipientUnsubscribed
    "group_resubscribe": ReportKind.RESUBSCRIBED,  # the timeline only
}
"""SendGrid's ``event`` -> our report kind; anything else is ``ReportKind.UNKNOWN``."""

BOUNCE_KINDS: dict[str, ReportKind] = {
    "bounce": ReportKind.BOUNCED,  # failure=bounced
    "blocked": ReportKind.BLOCKED,  # failure=blocked
}
"""A ``bounce`` event's ``type`` -> our report kind (SendGrid: bounce or blocked; default bounced)."""


@dataclass
class MappedBatch:
    """What a webhook batch held: our reports, and how many events were not ours or unreadable."""

    reports: list[DeliveryReport] = field(default_factory=list)
    not_ours: int = 0
    unreadable: int = 0
    unknown_types: set[str] = field(default_factory=set)


def report_kind(event: dict[str, Any]) -> ReportKind:
    kind = EVENT_KINDS.get(str(event.get("event", "")), ReportKind.UNKNOWN)
    if kind is ReportKind.BOUNCED:
        return BOUNCE_KINDS.get(str(event.get("type", "bounce")).lower(), ReportKind.BOUNCED)
    return kind


def map_batch(events: Sequence[Any], received_at: datetime) -> MappedBatch:
    """Map every event of a batch; never raises for a bad event (it is counted instead)."""
    batch = MappedBatch()
    for event in events:
        if not isinstance(event, dict):
            batch.unreadable += 1
            continue
        email_id = event.get(EMAIL_ID_ARG)
        if not isinstance(email_id, str) or not email_id:
            batch.not_ours += 1
            continue
        try:
            report = to_report(event, email_id, received_at)
        except (ValidationError, TypeError, ValueError):
            batch.unreadable += 1
            continue
        if report.kind is ReportKind.UNKNOWN:
            batch.unknown_types.add(str(event.get("event"))[:64])
        batch.reports.append(report)
    return batch


def to_report(event: dict[str, Any], email_id: str, received_at: datetime) -> DeliveryReport:
    """One SendGrid event (carrying our ``email_id``) as a ``DeliveryReport``.

    Built with ``model_construct``: every value below already has the type its
    field requires (the recipient checked by ``valid_address``), so pydantic's
    validation of the whole model, per event, would only repeat the work.
    """
    kind = report_kind(event)
    response = _text(event.get("response"))
    reason = _text(event.get("reason"))
    if kind is ReportKind.DROPPED:
        reason = reason or _text(event.get("type"))  # anymail: the cause may be in either
    elif kind in (ReportKind.DELIVERED, ReportKind.DEFERRED):
        reason = response or reason
    return DeliveryReport.model_construct(
        provider=PROVIDER,
        provider_event_id=_text(event.get("sg_event_id")) or _fingerprint(event),
        email_id=email_id,
        recipient=valid_address(str(event.get("email", ""))),
        kind=kind,
        occurred_at=_timestamp(event.get("timestamp"), received_at),
        provider_message_id=_text(event.get("sg_message_id")),
        reason=reason,
        url=_text(event.get("url")),
        user_agent=_text(event.get("useragent")),
        provider_event_type=_text(event.get("event")),
        mta_response=response,
        bounce_type=_text(event.get("type")) if kind in (ReportKind.BOUNCED, ReportKind.BLOCKED) else None,
        bounce_classification=_text(event.get("bounce_classification")),
        machine_open=event.get("sg_machine_open") is True,
        attempt=_attempt(event.get("attempt")),
    )


def valid_address(address: str) -> str:
    """``address`` as ``DeliveryReport.recipient`` takes it (``contracts.fields.EmailAddress``: each
    distinct address checked once, the same recipient coming back in event after event), else
    ``ValidationError``."""
    return _EMAIL_ADDRESS.validate_python(address)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _timestamp(value: Any, default: datetime) -> datetime:
    """SendGrid's ``timestamp`` is unix seconds; a missing or absurd one is the time we received it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return default
    return default


def _attempt(value: Any) -> int | None:
    try:
        attempt = int(value)
    except (TypeError, ValueError):
        return None
    return attempt if attempt >= 0 else None


def _fingerprint(event: dict[str, Any]) -> str:
    """A stable id for an event without ``sg_event_id``: the same event posted again dedupes."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
