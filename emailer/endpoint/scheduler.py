"""The scheduler's step: wake the emails that are due (send_at, retries, expired waits).

Each email decides for itself whether to ask for a dispatch (``Email.wake``);
the unit of work sends what it asked for when this step commits, under the
email's own correlation and conversation ids (those of the command that created
it), never ids of the scheduler's own.

``allowance`` (optional) says how many sends the provider would take now (its
shared pause and drain rate): a pass wakes no more emails than that, so a
backlog after an outage is fed at the drain rate instead of all at once.
"""

from __future__ import annotations

from collections.abc import Callable

from emailer.domain import RetryPolicy
from handlers.ports import Clock, MessageContext
from handlers.unit_of_work import AbstractUnitOfWork


def schedule_due(
    uow: AbstractUnitOfWork,
    clock: Clock,
    policy: RetryPolicy,
    limit: int = 200,
    allowance: Callable[[int], int] | None = None,
) -> int:
    """One pass; returns how many DispatchEmail commands it queued."""
    if allowance is not None:
        limit = allowance(limit)
        if limit <= 0:
            return 0
    queued = 0
    with uow:
        uow.context = MessageContext.originating("Scheduler")
        now = clock.now()
        for email in uow.emails.due(now, limit):
            queued += email.wake(now, policy)
        uow.commit()
    return queued
