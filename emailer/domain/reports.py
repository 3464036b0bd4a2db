"""How each kind of provider report moves one recipient, as a table of small rules.

A rule changes the recipient through its methods and answers what happened:
the timeline steps to record and the public events to emit, which the email
then records and emits (this module knows nothing of ``Email``). An open or a
click implies delivery, whatever order the callbacks came in.

The events are built with ``model_construct``: every value comes from a
``DeliveryReport`` the contracts validated on decoding and from the email
itself, and validating each address again cost more than the rest of applying
a report (bench/webhooks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from contracts import (
    DeliveryReport,
    EmailRecipientClicked,
    EmailRecipientComplained,
    EmailRecipientDeferred,
    EmailRecipientDelivered,
    EmailRecipientDeliveryFailed,
    EmailRecipientOpened,
    EmailRecipientUnsubscribed,
    Event,
    ReportKind,
)
from emailer.domain.recipient import Recipient


@dataclass(frozen=True)
class About:
    """What every per-recipient event says about its email."""

    email_id: str
    metadata: dict[str, str]
    provider_message_id: str | None


@dataclass(frozen=True)
class Happened:
    """One consequence of a report: a timeline step, with the event to publish (if any)."""

    kind: str
    detail: dict[str, Any]
    event: Event | None = None


Rule = Callable[[Recipient, DeliveryReport, About], list[Happened]]


def apply_report(recipient: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    """Apply one report to ``recipient``; what happened, in order (nothing for a stale report)."""
    return RULES.get(report.kind, _unknown)(recipient, report, about)


def _fields(about: About, r: Recipient, report: DeliveryReport) -> dict[str, Any]:
    return {
        "email_id": about.email_id,
        "metadata": about.metadata,
        "occurred_at": report.occurred_at,
        "recipient": r.address,
        "provider": report.provider,
        "provider_message_id": report.provider_message_id or about.provider_message_id,
    }


def _delivered(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    if not r.deliver(report.occurred_at, report.reason):
        return []
    event = EmailRecipientDelivered.model_construct(**_fields(about, r, report))
    return [Happened("recipient_delivered", {"recipient": r.address}, event)]


def _deferred(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    if not r.defer(report.occurred_at, report.reason):
        return []
    event = EmailRecipientDeferred.model_construct(
        **_fields(about, r, report), reason=report.reason, attempt=report.attempt
    )
    return [Happened("recipient_deferred", {"recipient": r.address, "reason": report.reason}, event)]


def _failed(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    if not r.fail(report.occurred_at, report.reason):
        return []
    failure = cast(Literal["bounced", "dropped", "blocked"], report.kind.value)
    detail = {"recipient": r.address, "failure": failure, "reason": report.reason}
    event = EmailRecipientDeliveryFailed.model_construct(
        **_fields(about, r, report),
        failure=failure,
        reason=report.reason,
        bounce_classification=report.bounce_classification,
    )
    return [Happened("recipient_failed", detail, event)]


def _engaged(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    """An open or a click proves delivery, unless the outcome is known (it never revives a failure)."""
    if not r.deliver_implied(report.occurred_at):
        return []
    event = EmailRecipientDelivered.model_construct(**_fields(about, r, report))
    return [Happened("recipient_delivered", {"recipient": r.address, "implied_by": report.kind.value}, event)]


def _opened(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    happened = _engaged(r, report, about)
    r.record_open()
    event = EmailRecipientOpened.model_construct(
        **_fields(about, r, report), user_agent=report.user_agent, machine_open=report.machine_open
    )
    return [*happened, Happened("recipient_opened", {"recipient": r.address}, event)]


def _clicked(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    happened = _engaged(r, report, about)
    r.record_click()
    event = EmailRecipientClicked.model_construct(
        **_fields(about, r, report), url=report.url, user_agent=report.user_agent
    )
    return [*happened, Happened("recipient_clicked", {"recipient": r.address, "url": report.url}, event)]


def _complained(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    if not r.complain():
        return []
    event = EmailRecipientComplained.model_construct(**_fields(about, r, report))
    return [Happened("recipient_complained", {"recipient": r.address}, event)]


def _unsubscribed(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    if not r.unsubscribe():
        return []
    event = EmailRecipientUnsubscribed.model_construct(**_fields(about, r, report))
    return [Happened("recipient_unsubscribed", {"recipient": r.address}, event)]


def _processed(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    """The provider has the message (the email records acceptance); no recipient change."""
    return []


def _resubscribed(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    """Back in a suppression group: worth a line on the timeline, not a public event."""
    return [Happened("recipient_resubscribed", {"recipient": r.address})]


def _unknown(r: Recipient, report: DeliveryReport, about: About) -> list[Happened]:
    detail = {"recipient": r.address, "provider_event": report.provider_event_type}
    return [Happened("report_unknown", detail)]


RULES: dict[ReportKind, Rule] = {
    ReportKind.PROCESSED: _processed,
    ReportKind.DELIVERED: _delivered,
    ReportKind.DEFERRED: _deferred,
    ReportKind.BOUNCED: _failed,
    ReportKind.DROPPED: _failed,
    ReportKind.BLOCKED: _failed,
    ReportKind.OPENED: _opened,
    ReportKind.CLICKED: _clicked,
    ReportKind.COMPLAINED: _complained,
    ReportKind.UNSUBSCRIBED: _unsubscribed,
    ReportKind.RESUBSCRIBED: _resubscribed,
}
