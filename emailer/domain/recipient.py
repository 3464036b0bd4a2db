"""One addressee of an email and what is known of its delivery.

A recipient moves between its states only through its own methods; each says
whether anything changed, so the email can record and publish exactly once.
Stale reports (older than a final state) and repeats change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from emailer.domain.status import FINAL, RecipientStatus


@dataclass
class Recipient:
    address: str
    kind: str  # to, cc or bcc
    name: str | None = None
    status: RecipientStatus = RecipientStatus.PENDING
    status_reason: str | None = None
    status_at: datetime | None = None
    opens: int = 0
    clicks: int = 0
    complained: bool = False
    unsubscribed: bool = False
    delivery_implied: bool = False
    """Delivered only as far as an open or a click implies: any explicit report outranks it."""
    changed: bool = field(default=False, compare=False)
    """Changed since loaded or saved (repositories save only changed recipients)."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    # ------------------------------------------------------------ delivery state

    def deliver(self, at: datetime, reason: str | None = None) -> bool:
        """The recipient's server took the message; True if this is news (an event to publish).

        A delivery that an open or a click implied is replaced by the explicit
        one (its time and answer), which is not news: it was published already.
        """
        if self.status is RecipientStatus.DELIVERED and self.delivery_implied:
            self.status_at, self.status_reason, self.delivery_implied = at, reason, False
            self.changed = True
            return False
        return self._reach(RecipientStatus.DELIVERED, at, reason)

    def deliver_implied(self, at: datetime) -> bool:
        """An open or a click proves delivery, unless the recipient's outcome is already known."""
        if self.is_final:
            return False
        self.delivery_implied = True
        return self._reach(RecipientStatus.DELIVERED, at, "implied by engagement")

    def defer(self, at: datetime, reason: str | None = None) -> bool:
        """The recipient's server asked the provider to try again later."""
        return self._reach(RecipientStatus.DEFERRED, at, reason)

    def fail(self, at: datetime, reason: str | None = None) -> bool:
        """The message will not reach this recipient (bounced, dropped, blocked).

        An explicit failure outranks a delivery that engagement only implied, whenever it happened.
        """
        if self.status is RecipientStatus.DELIVERED and self.delivery_implied:
            self.status_at = None
            self.delivery_implied = False
        return self._reach(RecipientStatus.FAILED, at, reason)

    def _reach(self, status: RecipientStatus, at: datetime, reason: str | None) -> bool:
        """Move to ``status`` unless the report is stale or a repeat.

        A final state (delivered, failed) is left only for another final state that
        happened later (an asynchronous bounce after delivery), or at the same
        second for a failure (so that the order the two arrive in does not
        matter); a deferral never undoes a final state, nor an older deferral a
        newer one.
        """
        if self.is_final and (
            status is RecipientStatus.DEFERRED
            or self.status is status
            or (
                self.status_at is not None
                and (at < self.status_at or (at == self.status_at and status is not RecipientStatus.FAILED))
            )
        ):
            return False
        stale_deferral = (
            self.status is RecipientStatus.DEFERRED is status
            and self.status_at is not None
            and at < self.status_at
        )
        if stale_deferral:
            return False
        self.status = status
        self.status_reason = reason
        self.status_at = at
        self.changed = True
        return True

    # ---------------------------------------------------------------- engagement

    def record_open(self) -> None:
        self.opens += 1
        self.changed = True

    def record_click(self) -> None:
        self.clicks += 1
        self.changed = True

    def complain(self) -> bool:
        """Marked the message as spam; True the first time only."""
        if self.complained:
            return False
        self.complained = self.changed = True
        return True

    def unsubscribe(self) -> bool:
        """Unsubscribed through the provider's link; True the first time only."""
        if self.unsubscribed:
            return False
        self.unsubscribed = self.changed = True
        return True
