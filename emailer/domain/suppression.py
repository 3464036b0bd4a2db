"""The suppression list: addresses Emailer no longer sends to, and which provider reports put them there.

A hard bounce, a spam complaint or an unsubscribe adds the recipient's address
(once: the first reason is kept, with the email that caused it). A later email
does not go to a listed address: that recipient fails at once with
``failure=suppressed`` (``Email.suppress``). An operator may add or remove an
address by hand.

A group unsubscribe is left out on purpose: it unsubscribes from one
SendGrid suppression group, not from every email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts import DeliveryReport, ReportKind


class SuppressionReason(StrEnum):
    BOUNCED = "bounced"
    """A hard bounce: the mailbox does not exist or refuses mail for good."""
    COMPLAINED = "complained"
    """The recipient marked an email as spam."""
    UNSUBSCRIBED = "unsubscribed"
    """The recipient unsubscribed through the provider's link."""
    MANUAL = "manual"
    """An operator listed the address."""


@dataclass(frozen=True)
class Suppression:
    address: str
    """Lower-cased (``normalize``): one entry however the address was written."""
    reason: SuppressionReason
    created_at: datetime
    source_email_id: str | None = None
    """The email whose report listed the address (None when an operator did)."""
    detail: str | None = None
    """The provider's words (a bounce's reason), or the operator's note."""

    def describe(self) -> str:
        """Why a recipient was not sent to, in one line (the event's ``reason``)."""
        source = f" after email {self.source_email_id}" if self.source_email_id else ""
        return f"suppressed: {self.reason.value}{source}"


def normalize(address: str) -> str:
    return address.strip().lower()


REASONS: dict[ReportKind, SuppressionReason] = {
    ReportKind.BOUNCED: SuppressionReason.BOUNCED,
    ReportKind.COMPLAINED: SuppressionReason.COMPLAINED,
    ReportKind.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
}
"""Report kinds that list the recipient's address (a blocked or dropped message does not)."""

GROUP_ONLY = frozenset({"group_unsubscribe"})
"""Provider event types that are an unsubscribe from one group only: not listed."""


def suppression_for(report: DeliveryReport, now: datetime) -> Suppression | None:
    """The entry a report adds to the list, or None."""
    reason = REASONS.get(report.kind)
    if reason is None or report.provider_event_type in GROUP_ONLY:
        return None
    return Suppression(
        address=normalize(report.recipient),
        reason=reason,
        created_at=now,
        source_email_id=report.email_id,
        detail=report.reason,
    )
