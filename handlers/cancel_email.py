"""CancelEmail: stop an email the provider does not have yet, and say whether that worked.

``cancel`` is the decision, shared by the bus handler and the gateway's
``DELETE /v1/emails/{id}`` (which needs the answer at once): it took effect
(``EmailCancelled`` is published, once, however often it is asked), it came too
late (the email is being handed to the provider, or the provider has it, or it
failed: nothing changes), or there is no such email.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog

from contracts import CancelEmail
from emailer.domain import EmailStatus
from handlers.ports import Clock
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

CANCELLABLE = (EmailStatus.QUEUED, EmailStatus.CANCELLED)


@dataclass(frozen=True)
class CancelResult:
    outcome: Literal["cancelled", "too_late", "unknown"]
    status: str | None = None
    """The email's status after the request (None for an unknown email)."""

    @property
    def cancelled(self) -> bool:
        return self.outcome == "cancelled"


def cancel(email_id: str, reason: str | None, uow: AbstractUnitOfWork, clock: Clock) -> CancelResult:
    """Runs inside the caller's transaction; the caller commits."""
    email = uow.emails.get(email_id)
    if email is None:
        log.warning("cancel_email.unknown_email", email_id=email_id)
        return CancelResult("unknown")
    if email.status not in CANCELLABLE:
        # Too late is an answer, not a failure: the email stays as it is.
        log.info("cancel_email.too_late", email_id=email_id, status=email.status.value)
        return CancelResult("too_late", email.status.value)
    email.cancel(reason, clock.now())
    return CancelResult("cancelled", email.status.value)


def cancel_email(command: CancelEmail, uow: AbstractUnitOfWork, clock: Clock) -> None:
    cancel(command.email_id, command.reason, uow, clock)
