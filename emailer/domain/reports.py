"""How each kind of provider report moves one recipient, as a table of small rules.

Stale reports (older than the recipient's final state) and repeats change
nothing and emit nothing; an open or click implies delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from contracts import (
    DeliveryReport,
    EmailRecipientClicked,
    EmailRecipientComplained,
    EmailRecipientDeferred,
    EmailRecipientDelivered,
    EmailRecipientDeliveryFailed,
    EmailRecipientOpened,
    EmailRecipientUnsubscribed,
    ReportKind,
)
from emailer.domain.status import FINAL, RecipientStatus

if TYPE_CHECKING:
    from emailer.domain.model import Email, Recipient


def _report_delivered(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if email._set_recipient(r, RecipientStatus.DELIVERED, report):
        email._record(report.occurred_at, "recipient_delivered", {"recipient": r.address})
        email._emit(EmailRecipientDelivered(**email._recipient_event_fields(r, report)))


def _report_deferred(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if email._set_recipient(r, RecipientStatus.DEFERRED, report):
        email._record(
            report.occurred_at, "recipient_deferred", {"recipient": r.address, "reason": report.reason}
        )
        email._emit(EmailRecipientDeferred(**email._recipient_event_fields(r, report), reason=report.reason))


def _report_failed(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if email._set_recipient(r, RecipientStatus.FAILED, report):
        failure = cast(Literal["bounced", "dropped", "blocked"], report.kind.value)
        email._record(
            report.occurred_at,
            "recipient_failed",
            {"recipient": r.address, "failure": failure, "reason": report.reason},
        )
        email._emit(
            EmailRecipientDeliveryFailed(
                **email._recipient_event_fields(r, report),
                failure=failure,
                reason=report.reason,
            )
        )


def _engaged(email: Email, r: Recipient, report: DeliveryReport) -> None:
    """An open or a click proves delivery, whatever order the callbacks came in."""
    if r.status not in FINAL:
        _report_delivered(email, r, report)


def _report_opened(email: Email, r: Recipient, report: DeliveryReport) -> None:
    _engaged(email, r, report)
    r.opens += 1
    r.changed = True
    email._record(report.occurred_at, "recipient_opened", {"recipient": r.address})
    email._emit(
        EmailRecipientOpened(**email._recipient_event_fields(r, report), user_agent=report.user_agent)
    )


def _report_clicked(email: Email, r: Recipient, report: DeliveryReport) -> None:
    _engaged(email, r, report)
    r.clicks += 1
    r.changed = True
    email._record(report.occurred_at, "recipient_clicked", {"recipient": r.address, "url": report.url})
    email._emit(
        EmailRecipientClicked(
            **email._recipient_event_fields(r, report), url=report.url, user_agent=report.user_agent
        )
    )


def _report_complained(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if not r.complained:
        r.complained = r.changed = True
        email._record(report.occurred_at, "recipient_complained", {"recipient": r.address})
        email._emit(EmailRecipientComplained(**email._recipient_event_fields(r, report)))


def _report_unsubscribed(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if not r.unsubscribed:
        r.unsubscribed = r.changed = True
        email._record(report.occurred_at, "recipient_unsubscribed", {"recipient": r.address})
        email._emit(EmailRecipientUnsubscribed(**email._recipient_event_fields(r, report)))


def _report_processed(email: Email, r: Recipient, report: DeliveryReport) -> None:
    """The provider has the message (acceptance was recorded above); no recipient change."""


def report_unknown(email: Email, r: Recipient, report: DeliveryReport) -> None:
    email._record(
        report.occurred_at,
        "report_unknown",
        {"recipient": r.address, "provider_event": report.provider_event_type},
    )


REPORT_RULES = {
    ReportKind.PROCESSED: _report_processed,
    ReportKind.DELIVERED: _report_delivered,
    ReportKind.DEFERRED: _report_deferred,
    ReportKind.BOUNCED: _report_failed,
    ReportKind.DROPPED: _report_failed,
    ReportKind.BLOCKED: _report_failed,
    ReportKind.OPENED: _report_opened,
    ReportKind.CLICKED: _report_clicked,
    ReportKind.COMPLAINED: _report_complained,
    ReportKind.UNSUBSCRIBED: _report_unsubscribed,
}
