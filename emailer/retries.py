"""Every retry policy in Emailer, in one place, with its defaults.

In-process retries (wait, then try the same call again) go through
``tenacity``; each has a factory here so that its numbers are read in one
place. Where kombu already retries (opening the bus at start-up) it keeps
doing so, with its numbers from here. The other policies are listed so that
nobody has to hunt for them:

=============================  ===========================================  ===========================
what is retried                how (and where)                              numbers
=============================  ===========================================  ===========================
a broker publish               reconnect, publish the whole batch again     ``publish_retrying``,
                               (``adapters/bus/publishing.py``)             ``PUBLISH``
opening the bus (``connect``)  kombu ``ensure_connection``, bounded         ``BROKER_CONNECT``
                               (``adapters/bus/kombu_bus.py``)
the consumer's lost            tenacity, no limit, ends when the worker     ``broker_reconnect_retrying``,
connection                     stops (``adapters/bus/consuming.py``)        ``BROKER_RECONNECT``
a gateway's database or        tenacity in a background thread, no limit,   ``dependency_retrying``,
broker not answering at        ends when the gateway stops (``entrypoints/  ``DEPENDENCY_WAIT``
start-up                       gateway/dependencies.py``); it serves
                               meanwhile (/readyz 503, POST 503)
an outcome hit by a conflict   reload the email, apply the outcome again    ``conflict_retrying``,
                                                                            ``CONFLICT``
a lost database connection     a new connection, the same short             ``database_retrying``,
in a transaction safe to run   transaction again (``adapters/persistence/   ``DATABASE``
again: outbox claim and        reconnect.py``); never a handler's
mark-sent, a scheduler tick    transaction (see the next line)
a message whose handler fails  immediate retries, delayed retries (delay      ``EMAILER_IMMEDIATE_RETRIES``,
                               queues), then the error queue, counted in    ``EMAILER_DELAYED_RETRIES``,
                               headers (``endpoint/recoverability.py``)     ``EMAILER_DELAYED_RETRY_DELAYS``
a dependency down while        the consumer keeps the messages, pauses,     ``dependency_pause``,
messages are handled           hands them over again; no retry spent        ``DEPENDENCY_PAUSE``
                               (``adapters/bus/consuming.py``)
an outbox row not confirmed    the sweep publishes it again once it is      ``EMAILER_OUTBOX_SWEEP_*``
right after its commit         that old (``adapters/persistence/outbox.py``)
an outbox row a crashed        taken again once the claim's lease ends      ``OUTBOX_CLAIM_LEASE``
sweeper had claimed            (``adapters/persistence/outbox.py``)
an email the provider refused  back to the database with a later due time   ``emailer.domain.RetryPolicy``
for now (429, 5xx, down)       (backoff, Retry-After, 24 h budget)          (``EMAILER_RETRY_*``)
a provider that keeps failing  circuit breaker around the provider: stop     ``EMAILER_CIRCUIT_*``
                               calling for a while, postpone emails without
                               spending an attempt (``adapters/providers/
                               circuit_breaker.py``)
=============================  ===========================================  ===========================
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base

from emailer import redaction

_log = structlog.get_logger(__name__)

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Exception types to retry on, or a predicate that says whether an exception is worth a retry."""


@dataclass(frozen=True)
class Backoff:
    """How many tries in all (0: no limit), and the exponential wait between them (seconds)."""

    attempts: int
    first_wait: float
    max_wait: float


PUBLISH = Backoff(attempts=4, first_wait=0.25, max_wait=2.0)
"""A publish that cannot get through within a few seconds raises to its caller (the outbox keeps it)."""
BROKER_CONNECT = Backoff(attempts=4, first_wait=0.5, max_wait=4.0)
"""Opening the bus at start-up: a few tries (kombu's, linear), then ``BusUnavailable``."""
BROKER_RECONNECT = Backoff(attempts=0, first_wait=0.25, max_wait=5.0)
"""The consumer reconnects for as long as the worker runs (0: no limit)."""
DEPENDENCY_WAIT = Backoff(attempts=0, first_wait=0.5, max_wait=10.0)
"""A gateway that started without its database or broker tries again for as long as it runs."""
CONFLICT = Backoff(attempts=3, first_wait=0.0, max_wait=0.05)
"""Recording a provider outcome that raced a callback: reload and apply again."""
DATABASE = Backoff(attempts=5, first_wait=0.2, max_wait=3.0)
"""A transaction that lost its database connection before it committed."""
DEPENDENCY_PAUSE = Backoff(attempts=0, first_wait=0.25, max_wait=5.0)
"""The consumer's pause while the database (or another dependency) does not answer: a few seconds at
most, so that it resumes within that of the dependency's return."""
OUTBOX_CLAIM_LEASE = timedelta(minutes=2)
"""How long a sweeper owns the outbox rows it claimed: longer than a publish can take
(confirm timeout and publish retries), so a live sweeper is not overtaken."""


def dependency_pause(pauses: int) -> float:
    """Seconds of the ``pauses``-th pause (1, 2, ...): ``DEPENDENCY_PAUSE``, exponential, jittered."""
    ceiling: float = min(DEPENDENCY_PAUSE.max_wait, DEPENDENCY_PAUSE.first_wait * 2.0 ** min(pauses - 1, 30))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def _logger(
    event: str, on_retry: Callable[[BaseException], None] | None = None
) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            event,
            attempt=state.attempt_number,
            retry_in=round(state.next_action.sleep, 3) if state.next_action else None,
            error=redaction.describe(error) if error else None,
        )
        if on_retry is not None and error is not None:
            on_retry(error)

    return log


def _retry_on(on: RetryOn) -> retry_base:
    if isinstance(on, type | tuple):
        return retry_if_exception_type(on)
    return retry_if_exception(on)


def _wait(backoff: Backoff, jitter: bool) -> Any:
    if jitter:
        return wait_random_exponential(multiplier=backoff.first_wait or 0.01, max=backoff.max_wait)
    return wait_exponential(multiplier=backoff.first_wait, max=backoff.max_wait)


class _StopWhen(stop_base):
    """Stop retrying once ``should_stop()`` says so (the worker is shutting down)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.should_stop()


def _stop(backoff: Backoff) -> stop_base:
    return stop_after_attempt(backoff.attempts) if backoff.attempts else stop_never


def retrying(backoff: Backoff, on: RetryOn, event: str, *, jitter: bool = True, **kwargs: Any) -> Retrying:
    """A ``tenacity.Retrying`` for ``backoff`` on exceptions ``on``; the last failure is re-raised."""
    return Retrying(
        stop=_stop(backoff),
        wait=_wait(backoff, jitter),
        retry=_retry_on(on),
        reraise=True,
        before_sleep=_logger(event),
        **kwargs,
    )


def publish_retrying(on: RetryOn) -> Retrying:
    return retrying(PUBLISH, on, "bus.publish_retry")


def broker_reconnect_retrying(
    on: RetryOn,
    *,
    should_stop: Callable[[], bool],
    sleep: Callable[[float], None],
    on_retry: Callable[[BaseException], None] | None = None,
) -> Retrying:
    """The consumer's reconnect: ``BROKER_RECONNECT``, ending (re-raising) once ``should_stop()``.

    ``sleep`` should wake early when asked to stop; ``on_retry(exc)`` runs before each pause.
    """
    return Retrying(
        stop=stop_any(_stop(BROKER_RECONNECT), _StopWhen(should_stop)),
        wait=_wait(BROKER_RECONNECT, jitter=True),
        retry=_retry_on(on),
        reraise=True,
        before_sleep=_logger("bus.consumer.reconnect_retry", on_retry),
        sleep=sleep,
    )


def dependency_retrying(
    on: RetryOn, *, event: str, should_stop: Callable[[], bool], sleep: Callable[[float], None]
) -> Retrying:
    """``DEPENDENCY_WAIT``: no limit, ending (re-raising) once ``should_stop()``; ``sleep`` wakes early."""
    return Retrying(
        stop=stop_any(_stop(DEPENDENCY_WAIT), _StopWhen(should_stop)),
        wait=_wait(DEPENDENCY_WAIT, jitter=True),
        retry=_retry_on(on),
        reraise=True,
        before_sleep=_logger(event),
        sleep=sleep,
    )


def conflict_retrying(on: RetryOn) -> Retrying:
    return retrying(CONFLICT, on, "dispatch.record_conflict_retry")


def database_retrying(on: RetryOn) -> Retrying:
    return retrying(DATABASE, on, "database.retry")
