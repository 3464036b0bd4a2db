"""When to try again after a transient provider failure, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, inside an overall budget.

    ``retry_after`` from the provider (a 429's Retry-After) is honoured: the next
    attempt is never earlier than it, and it is spread by the same jitter (later only),
    so emails told the same Retry-After do not all come back at one instant.
    """

    first_delay: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)
    budget: timedelta = timedelta(hours=24)
    jitter: float = 0.2
    unknown_outcome_wait: timedelta = timedelta(hours=1)
    dispatch_lease: timedelta = timedelta(minutes=2)
    resend_needs_lookup: bool = False
    """The provider can be asked what it holds (``Email.reconcile``): an unknown outcome is then
    never requeued by the wait running out, only by the provider saying it has no such message."""
    reconcile_after: timedelta = timedelta(seconds=35)
    """An attempt this old with no recorded outcome is looked up (longer than a provider call may take)."""
    reconcile_grace: timedelta = timedelta(minutes=5)
    """The provider's "none" allows a resend only once the attempt is this old (its records may lag)."""

    def delay(self, failed_attempts: int, retry_after: timedelta | None = None) -> timedelta:
        """Delay before the next attempt, after ``failed_attempts`` (>= 1) failures."""
        base = self.first_delay.total_seconds() * self.factor ** max(0, failed_attempts - 1)
        base = min(base, self.max_delay.total_seconds())
        base *= 1 + random.uniform(-self.jitter, self.jitter)
        delay = timedelta(seconds=max(0.0, base))
        if retry_after is not None and retry_after > delay:
            delay = retry_after * (1 + random.uniform(0, self.jitter))
        return delay

    def deadline(self, created_at: datetime, send_at: datetime | None = None) -> datetime:
        """When transient failures stop being retried: ``budget`` after sending was first due.

        That is ``send_at`` when the email was scheduled (not when it was created):
        an email scheduled a day ahead gets its whole budget from then.
        """
        return max(created_at, send_at or created_at) + self.budget
