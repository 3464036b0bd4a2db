"""The scheduler's step: find emails that are due (send_at, retries, expired waits) and dispatch them."""

from __future__ import annotations

from contracts import DispatchEmail
from emailer.domain import EmailStatus, RetryPolicy
from handlers.ports import Clock, MessageContext
from handlers.unit_of_work import AbstractUnitOfWork


def schedule_due(uow: AbstractUnitOfWork, clock: Clock, policy: RetryPolicy, limit: int = 200) -> int:
    """One pass; returns how many DispatchEmail commands it queued."""
    queued = 0
    with uow:
        uow.context = MessageContext.originating("Scheduler")
        now = clock.now()
        for email in uow.emails.due(now, limit):
            if email.status is EmailStatus.DISPATCHING:
                email.give_up_waiting(now)
            if email.is_due(now):
                email.lease_dispatch(now, policy)
                uow.send(DispatchEmail(email_id=email.id))
                queued += 1
        uow.commit()
    return queued
