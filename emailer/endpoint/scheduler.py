"""The scheduler's step: wake the emails that are due (send_at, retries, expired waits).

Each email decides for itself whether to ask for a dispatch (``Email.wake``);
the unit of work sends what it asked for when this step commits.
"""

from __future__ import annotations

from emailer.domain import RetryPolicy
from handlers.ports import Clock, MessageContext
from handlers.unit_of_work import AbstractUnitOfWork


def schedule_due(uow: AbstractUnitOfWork, clock: Clock, policy: RetryPolicy, limit: int = 200) -> int:
    """One pass; returns how many DispatchEmail commands it queued."""
    queued = 0
    with uow:
        uow.context = MessageContext.originating("Scheduler")
        now = clock.now()
        for email in uow.emails.due(now, limit):
            queued += email.wake(now, policy)
        uow.commit()
    return queued
