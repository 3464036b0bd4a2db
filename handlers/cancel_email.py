"""CancelEmail: stop an email the provider does not have yet."""

from __future__ import annotations

import structlog

from contracts import CancelEmail
from emailer.domain import IllegalTransition
from handlers.ports import Clock
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


def cancel_email(command: CancelEmail, uow: AbstractUnitOfWork, clock: Clock) -> None:
    email = uow.emails.get(command.email_id)
    if email is None:
        log.warning("cancel_email.unknown_email", email_id=command.email_id)
        return
    try:
        email.cancel(command.reason, clock.now())
    except IllegalTransition as exc:
        # Too late is an answer, not a failure: the email stays as it is.
        log.info("cancel_email.too_late", email_id=command.email_id, reason=str(exc))
