"""Every retry policy in Emailer, in one place, with its defaults.

In-process retries (wait, then try the same call again) go through
``tenacity``; each has a factory here so that its numbers are read in one
place. The other policies are listed so that nobody has to hunt for them:

=============================  ==========================================  ===============================
what is retried                how                                         where the numbers live
=============================  ==========================================  ===============================
a broker publish               reconnect, publish the whole batch again    ``publish_retrying`` (here)
a lost broker connection        kombu ``ensure_connection`` (consumer)     ``BROKER_RECONNECT`` (here)
an outcome hit by a conflict   reload the email, apply the outcome again   ``conflict_retrying`` (here)
a lost database connection     new connection, same transaction again      ``database_retrying`` (here)
a message whose handler fails  requeue, then the error queue               ``IMMEDIATE_RETRIES`` (here)
an email the provider refused  back to the database with a later due time  ``emailer.domain.RetryPolicy``
  for now (429, 5xx, down)     (backoff, Retry-After, 24 h budget)          (``EMAILER_RETRY_*``)
a provider that keeps failing  circuit breaker: stop calling for a while   ``EMAILER_CIRCUIT_*``
=============================  ==========================================  ===============================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backoff:
    """How many tries in all, and the exponential wait between them (seconds)."""

    attempts: int
    first_wait: float
    max_wait: float


PUBLISH = Backoff(attempts=4, first_wait=0.25, max_wait=2.0)
"""A publish that cannot get through within a few seconds raises to its caller (the outbox keeps it)."""
BROKER_RECONNECT = Backoff(attempts=0, first_wait=0.25, max_wait=5.0)
"""The consumer reconnects for as long as the worker runs (0: no limit)."""
CONFLICT = Backoff(attempts=3, first_wait=0.0, max_wait=0.05)
"""Recording a provider outcome that raced a callback: reload and apply again."""
DATABASE = Backoff(attempts=5, first_wait=0.2, max_wait=3.0)
"""A transaction that lost its database connection before it committed."""
IMMEDIATE_RETRIES = 3
"""Times a failing message is handed to its handler again before it goes to the error queue."""


def _logger(event: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            event,
            attempt=state.attempt_number,
            retry_in=round(state.next_action.sleep, 3) if state.next_action else None,
            error=f"{type(error).__name__}: {error}" if error else None,
        )

    return log


def retrying(
    backoff: Backoff,
    on: type[BaseException] | tuple[type[BaseException], ...],
    event: str,
    *,
    jitter: bool = True,
    **kwargs: Any,
) -> Retrying:
    """A ``tenacity.Retrying`` for ``backoff`` on exceptions ``on``; the last failure is re-raised."""
    wait = (
        wait_random_exponential(multiplier=backoff.first_wait or 0.01, max=backoff.max_wait)
        if jitter
        else wait_exponential(multiplier=backoff.first_wait, max=backoff.max_wait)
    )
    return Retrying(
        stop=stop_after_attempt(backoff.attempts),
        wait=wait,
        retry=retry_if_exception_type(on),
        reraise=True,
        before_sleep=_logger(event),
        **kwargs,
    )


def publish_retrying(on: type[BaseException] | tuple[type[BaseException], ...]) -> Retrying:
    return retrying(PUBLISH, on, "bus.publish_retry")


def conflict_retrying(on: type[BaseException] | tuple[type[BaseException], ...]) -> Retrying:
    return retrying(CONFLICT, on, "dispatch.record_conflict_retry")


def database_retrying(on: type[BaseException] | tuple[type[BaseException], ...]) -> Retrying:
    return retrying(DATABASE, on, "database.retry")
