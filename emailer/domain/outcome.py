"""What came of handing an email to the provider, in the domain's words.

Providers answer with a ``SendOutcome``; ``Email.record_outcome`` decides what
it means for the email. (``handlers.ports`` re-exports both for the adapters.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    """The provider took the email."""
    REJECTED = "rejected"
    """The provider refused it for good (400, 413): retrying would not help."""
    TRANSIENT = "transient"
    """It did not reach the provider, or the provider asked us to come back (429, 5xx)."""
    UNKNOWN = "unknown"
    """The request was sent but no answer came: it may or may not have been taken."""
    POSTPONED = "postponed"
    """Not sent, and not tried: come back at ``retry_at`` (the provider's circuit is open, the provider
    as a whole is paused, or the drain rate says wait).

    Spends neither an attempt nor the retry budget."""
    MISCONFIGURED = "misconfigured"
    """The provider refused our credentials (401, 403): nothing is wrong with the email, and nothing
    was sent. An operator's fix, so like a postponement it spends neither an attempt nor the budget;
    the email waits until ``retry_at`` (when the provider will be tried again) or the retry policy's
    longest delay."""


@dataclass(frozen=True)
class SendOutcome:
    outcome: Outcome
    provider_message_id: str | None = None
    reason: str | None = None
    status: int | None = None
    retry_after: timedelta | None = None
    """The provider's Retry-After (a 429): the next attempt is never earlier."""
    retry_at: datetime | None = None
    """When a POSTPONED email may be tried again."""
    delivered: bool = False
    """Acceptance is final delivery to every recipient (a local drop, not a relay): no callbacks follow."""

    def __post_init__(self) -> None:
        if self.outcome is Outcome.POSTPONED and self.retry_at is None:
            raise ValueError("a postponed outcome says when to try again (retry_at)")
        if self.retry_at is not None and self.outcome not in (Outcome.POSTPONED, Outcome.MISCONFIGURED):
            raise ValueError("only an outcome that tried nothing says when to try again (retry_at)")

    @classmethod
    def accepted(
        cls, provider_message_id: str | None, status: int | None = None, delivered: bool = False
    ) -> SendOutcome:
        return cls(
            Outcome.ACCEPTED, provider_message_id=provider_message_id, status=status, delivered=delivered
        )

    @classmethod
    def postponed(cls, retry_at: datetime, reason: str) -> SendOutcome:
        return cls(Outcome.POSTPONED, reason=reason, retry_at=retry_at)
