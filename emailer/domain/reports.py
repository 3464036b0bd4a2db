"""How each kind of provider report moves one recipient, as a table of small rules.

Stale reports (older than the recipient's final state) and repeats change
nothing and emit nothing; an open or click implies delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

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


def move_recipient(recipient: Recipient, status: RecipientStatus, report: DeliveryReport) -> bool:
    """Move a recipient to ``status`` unless the report is stale or a repeat; True if it moved.

    A final state (delivered, failed) is left only for another final state that
    happened later (an asynchronous bounce after delivery); a deferral never
    undoes a final state, nor an older deferral a newer one.
    """
    if recipient.status in FINAL and (
        status is RecipientStatus.DEFERRED
        or (recipient.status_at is not None and report.occurred_at <= recipient.status_at)
        or recipient.status is status
    ):
        return False
    stale_deferral = (
        recipient.status is RecipientStatus.DEFERRED is status
        and recipient.status_at is not None
        and report.occurred_at < recipient.status_at
    )
    if stale_deferral:
        return False
    recipient.status = status
    recipient.status_reason = report.reason
    recipient.status_at = report.occurred_at
    recipient.changed = True
    return True


def event_fields(email: Email, recipient: Recipient, report: DeliveryReport) -> dict[str, Any]:
    """The fields every per-recipient event carries."""
    return {
        "email_id": email.id,
        "metadata": email.metadata,
        "occurred_at": report.occurred_at,
        "recipient": recipient.address,
        "provider": report.provider,
        "provider_message_id": report.provider_message_id or email.provider_message_id,
    }


def _report_delivered(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if move_recipient(r, RecipientStatus.DELIVERED, report):
        email._record(report.occurred_at, "recipient_delivered", {"recipient": r.address})
        email._emit(EmailRecipientDelivered(**event_fields(email, r, report)))


def _report_deferred(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if move_recipient(r, RecipientStatus.DEFERRED, report):
        email._record(
            report.occurred_at, "recipient_deferred", {"recipient": r.address, "reason": report.reason}
        )
        email._emit(EmailRecipientDeferred(**event_fields(email, r, report), reason=report.reason))


def _report_failed(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if move_recipient(r, RecipientStatus.FAILED, report):
        failure = cast(Literal["bounced", "dropped", "blocked"], report.kind.value)
        email._record(
            report.occurred_at,
            "recipient_failed",
            {"recipient": r.address, "failure": failure, "reason": report.reason},
        )
        email._emit(
            EmailRecipientDeliveryFailed(
                **event_fields(email, r, report),
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
    email._emit(EmailRecipientOpened(**event_fields(email, r, report), user_agent=report.user_agent))


def _report_clicked(email: Email, r: Recipient, report: DeliveryReport) -> None:
    _engaged(email, r, report)
    r.clicks += 1
    r.changed = True
    email._record(report.occurred_at, "recipient_clicked", {"recipient": r.address, "url": report.url})
    email._emit(
        EmailRecipientClicked(**event_fields(email, r, report), url=report.url, user_agent=report.user_agent)
    )


def _report_complained(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if not r.complained:
        r.complained = r.changed = True
        email._record(report.occurred_at, "recipient_complained", {"recipient": r.address})
        email._emit(EmailRecipientComplained(**event_fields(email, r, report)))


def _report_unsubscribed(email: Email, r: Recipient, report: DeliveryReport) -> None:
    if not r.unsubscribed:
        r.unsubscribed = r.changed = True
        email._record(report.occurred_at, "recipient_unsubscribed", {"recipient": r.address})
        email._emit(EmailRecipientUnsubscribed(**event_fields(email, r, report)))


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
