"""The provider gate: a provider as a whole, paused or throttled for every worker at once.

A circuit breaker (``circuit_breaker.py``) protects one worker from a provider
that keeps failing. Some answers are about the provider as a whole and must hold
for every worker, so they live in shared state (the database, ``provider_state``):

- **a pause** after a 429 (or a 5xx) with ``Retry-After`` / ``X-RateLimit-Reset``:
  nobody calls the provider before it ends. Emails that reach the gate meanwhile
  are postponed (no attempt spent) to the end of the pause plus a jitter, so they
  come back spread out, never before it.
- **a configuration error** (401/403: the API key is refused): dispatching for the
  provider stops, loudly (an error log, ``/readyz`` red), and no email fails for it:
  each waits. Every ``probe_wait`` one send goes through as a probe (the first
  caller after the pause takes it, every other one waits for it); an answer from
  the provider (accepted or rejected) ends the error, another 401 pauses again. A
  worker that starts (perhaps with a corrected key) lets the next send probe at once.
- **a drain rate** (``EMAILER_PROVIDER_MAX_RATE`` emails/s, with a burst of one
  second's worth): a shared GCRA (one timestamp, the theoretical arrival time), so
  a backlog after an outage drains at that rate across all workers, not all at once.

The decisions are plain functions over ``ProviderState`` (``decide``, ``paused``,
...); a ``ProviderStateStore`` applies them atomically (row lock on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite). The gate is the outermost wrapper: its
``POSTPONED`` answers are not failures the breaker should count.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import structlog

from emailer import redaction
from emailer.adapters.providers.crew import Crew
from handlers.ports import Clock, MessageLookup, Outcome, OutgoingEmail, Provider, SendOutcome, lookup_of

log = structlog.get_logger(__name__)
T = TypeVar("T")

RATE_LIMITED = "rate_limited"
"""Paused because the provider said when to come back (Retry-After / X-RateLimit-Reset)."""
CONFIGURATION = "configuration"
"""Paused because the provider refused our credentials: an operator must act."""
ANSWERED = frozenset({Outcome.ACCEPTED, Outcome.REJECTED})
STORE_DOWN_WAIT = timedelta(seconds=5)
EPSILON = 1e-6
"""Seconds: sums of float intervals must not cost a slot."""


@dataclass(frozen=True)
class DrainRate:
    """At most ``per_second`` sends per second across every worker (0: no limit), ``burst`` at once."""

    per_second: float = 0.0
    burst: int = 1

    @property
    def limited(self) -> bool:
        return self.per_second > 0

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        return (max(1, self.burst) - 1) * self.interval

    @classmethod
    def of(cls, per_second: float) -> DrainRate:
        """A rate with a burst of one second's worth."""
        return cls(per_second, max(1, math.ceil(per_second)))


@dataclass(frozen=True)
class ProviderState:
    """The shared row of one provider."""

    provider: str
    paused_until: datetime | None = None
    reason: str | None = None
    detail: str | None = None
    paused_at: datetime | None = None
    rate_tat: float | None = None
    """The drain rate's theoretical arrival time, epoch seconds."""

    def is_paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    @property
    def misconfigured(self) -> bool:
        """A configuration error no probe has cleared yet (whether or not a probe is due)."""
        return self.reason == CONFIGURATION


@dataclass(frozen=True)
class Admission:
    go: bool
    until: datetime | None = None
    """When not to go: the earliest time to come back."""
    reason: str | None = None
    probe: bool = False
    """This send is the probe of a configuration error."""
    count: int = 1
    """How many of the sends asked for may go (the first ``count``); the rest come back at ``until``."""


# ------------------------------------------------------------------ decisions (pure)


def decide(state: ProviderState, now: datetime, rate: DrainRate, probe_wait: timedelta, count: int = 1) -> (
    tuple[Admission, ProviderState]
):  # fmt: skip
    """May ``count`` sends go now? The answer (how many may, and when the others may come back) and the
    state after it. A batch takes as many slots of the drain rate as it sends, in one decision."""
    if state.paused_until is not None and now < state.paused_until:
        why = "configuration error" if state.misconfigured else "paused"
        return Admission(False, state.paused_until, f"{state.provider} {why}: {state.detail}", count=0), state
    if state.misconfigured:
        # The pause is over: one send is the probe; everyone else waits for its answer.
        until = now + probe_wait
        reason = f"{state.provider} configuration error: waiting for the probe"
        return Admission(True, until, reason, probe=True), dataclasses.replace(state, paused_until=until)
    if not rate.limited:
        return Admission(True, count=count), state
    stamp = now.timestamp()
    tat = max(state.rate_tat or 0.0, stamp)
    reason = f"{state.provider} drain rate ({rate.per_second:g}/s)"
    room = max(0, math.floor((stamp + rate.tolerance - tat + EPSILON) / rate.interval) + 1)
    admitted = min(count, room)
    tat += admitted * rate.interval
    until = datetime.fromtimestamp(tat - rate.tolerance, UTC)
    if admitted == 0:
        return Admission(False, until, reason, count=0), state
    return Admission(True, until, reason, count=admitted), dataclasses.replace(state, rate_tat=tat)


def allowance(state: ProviderState, now: datetime, rate: DrainRate, limit: int) -> int:
    """How many sends the provider would take now (at most ``limit``): what a scheduler pass may wake."""
    return decide(state, now, rate, timedelta(0), limit)[0].count


def paused(state: ProviderState, until: datetime, reason: str, detail: str | None, now: datetime) -> (
    ProviderState
):  # fmt: skip
    """The state after the provider asked to be left alone until ``until`` (never shortened)."""
    if reason == CONFIGURATION:
        since = state.paused_at if state.misconfigured else now
        return dataclasses.replace(state, paused_until=until, reason=reason, detail=detail, paused_at=since)
    if state.misconfigured:  # a configuration error outranks a rate limit
        return dataclasses.replace(state, paused_until=_later(state.paused_until, until))
    current = state.paused_until if state.is_paused(now) else None
    if current is not None and current >= until:
        return state
    return dataclasses.replace(state, paused_until=until, reason=reason, detail=detail, paused_at=now)


def resumed(state: ProviderState) -> ProviderState:
    """A probe was answered: the configuration error is over."""
    if not state.misconfigured:
        return state
    return dataclasses.replace(state, paused_until=None, reason=None, detail=None, paused_at=None)


def reprobed(state: ProviderState, now: datetime) -> ProviderState:
    """A configuration error may be probed at once (a worker started, perhaps with a new key)."""
    if not state.misconfigured:
        return state
    return dataclasses.replace(state, paused_until=now)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


# ------------------------------------------------------------------ the store port


class ProviderStateStore(Protocol):
    """The shared state; each method is one atomic read-decide-write of the provider's row."""

    def admit(
        self, provider: str, now: datetime, rate: DrainRate, probe_wait: timedelta, count: int = 1
    ) -> Admission:
        """``decide`` for ``count`` sends, atomically (a decision that changes nothing needs no lock)."""

    def pause(
        self, provider: str, until: datetime, reason: str, detail: str | None, now: datetime
    ) -> None: ...

    def resume(self, provider: str) -> None: ...

    def reprobe(self, provider: str, now: datetime) -> None: ...

    def allowance(self, provider: str, now: datetime, rate: DrainRate, limit: int) -> int: ...

    def read(self, provider: str) -> ProviderState: ...

    def read_all(self) -> list[ProviderState]: ...


class ProviderStateChanges(abc.ABC):
    """A ``ProviderStateStore`` from two primitives: ``read`` a provider's state, and ``_change`` it
    atomically by a step (the rules above); the SQL store and the tests' in-memory one share the rest."""

    @abc.abstractmethod
    def read(self, provider: str) -> ProviderState: ...

    @abc.abstractmethod
    def _change(self, provider: str, step: Callable[[ProviderState], tuple[T, ProviderState]]) -> T:
        """Apply ``step`` to the provider's state atomically; its result."""

    def admit(
        self, provider: str, now: datetime, rate: DrainRate, probe_wait: timedelta, count: int = 1
    ) -> Admission:
        return self._change(provider, lambda s: decide(s, now, rate, probe_wait, count))

    def pause(self, provider: str, until: datetime, reason: str, detail: str | None, now: datetime) -> None:
        self._change(provider, lambda s: (None, paused(s, until, reason, detail, now)))

    def resume(self, provider: str) -> None:
        self._change(provider, lambda s: (None, resumed(s)))

    def reprobe(self, provider: str, now: datetime) -> None:
        self._change(provider, lambda s: (None, reprobed(s, now)))

    def allowance(self, provider: str, now: datetime, rate: DrainRate, limit: int) -> int:
        return allowance(self.read(provider), now, rate, limit)


class _Halt:
    """Set by the first answer of a batch that pauses the provider: the batch's later calls do not go."""

    def __init__(self) -> None:
        self.until: datetime | None = None
        self.reason = ""
        self._lock = threading.Lock()

    def set(self, until: datetime, reason: str) -> None:
        with self._lock:
            if self.until is None:
                self.until, self.reason = until, reason


# ------------------------------------------------------------------ the gate


class ProviderGate:
    """A ``Provider`` that consults and updates the shared state around ``provider`` (same name)."""

    def __init__(
        self,
        provider: Provider,
        store: ProviderStateStore,
        clock: Clock,
        rate: DrainRate = DrainRate(),
        probe_wait: timedelta = timedelta(seconds=60),
        rate_limit_pause: timedelta = timedelta(seconds=10),
        jitter: timedelta = timedelta(seconds=1),
        concurrency: int = 1,
    ) -> None:
        """``concurrency``: provider calls in flight at once for one ``send_many`` (the caller's thread
        and a crew of threads made on first use; ``close`` ends them)."""
        self.provider = provider
        self.concurrency = concurrency
        self._crew = Crew(concurrency, "provider")
        self.name = provider.name
        self.store = store
        self.clock = clock
        self.rate = rate
        self.probe_wait = probe_wait
        self.rate_limit_pause = rate_limit_pause
        self.jitter = jitter
        self.lookup: MessageLookup | None = lookup_of(provider)
        """Passed through: asking the provider what it holds is no send (no pause or rate applies)."""
        self._proven = False
        """The provider has taken or refused a request of this process since it started or was last
        paused: until then a batch's first call goes alone (see ``_calls``)."""

    def __repr__(self) -> str:
        return f"ProviderGate({self.provider!r}, rate={self.rate.per_second:g}/s)"

    def prepare(self, email: OutgoingEmail) -> None:
        """Building the request is no call to the provider: straight through."""
        self.provider.prepare(email)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        return self.send_many([email])[0]

    def send_many(self, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
        """Send a batch: ONE admission for all of it (the shared row is read, and locked only when the
        decision changes it), then up to ``concurrency`` provider calls at once. The outcomes are in the
        order of ``emails``; those the gate held back are postponed, as a single send would be."""
        if not emails:
            return []
        now = self.clock.now()
        try:
            admission = self.store.admit(self.name, now, self.rate, self.probe_wait, len(emails))
        except Exception as exc:  # noqa: BLE001 - cannot tell whether we may send: do not, nothing is lost
            log.warning("provider.gate_unavailable", provider=self.name, error=redaction.describe(exc))
            held_back = SendOutcome.postponed(now + STORE_DOWN_WAIT, "provider state unavailable")
            return [held_back] * len(emails)
        admitted = admission.count if admission.go else 0
        sent = self._calls(emails[:admitted], _Halt())
        outcomes = [self._answered(o, probe=admission.probe and i == 0) for i, o in enumerate(sent)]
        for _ in emails[admitted:]:
            assert admission.until is not None
            outcomes.append(
                SendOutcome.postponed(self._spread(admission.until), admission.reason or "provider paused")
            )
        return outcomes

    def _calls(self, emails: Sequence[OutgoingEmail], halt: _Halt) -> list[SendOutcome]:
        """The provider's answers, up to ``concurrency`` calls in flight (the provider is thread-safe).

        Slow start: until the provider has answered this process with a send's result (after a start or
        a pause), a batch's first call goes alone and the rest follow its answer. A refused API key or a
        429 then costs one request, and the rest of the batch waits for the pause, instead of a whole
        wave of calls in flight answered the same way."""
        if len(emails) <= 1 or self.concurrency <= 1:
            return [self._call(e, halt) for e in emails]
        first: list[SendOutcome] = []
        if not self._proven:
            first, emails = [self._call(emails[0], halt)], emails[1:]
        return first + self._crew.map(lambda e: self._call(e, halt), emails)

    def _call(self, email: OutgoingEmail, halt: _Halt) -> SendOutcome:
        """One provider call, unless an answer in this batch already paused the provider as a whole (a
        refused key, a 429): then the rest of the batch waits as a later batch would, instead of calling.

        A provider raises only on a bug; whether its request left is then unknown, and an unknown
        outcome is what it is recorded as (never resent blind), not lost with the batch."""
        if halt.until is not None:
            return SendOutcome.postponed(self._spread(halt.until), halt.reason)
        try:
            outcome = self.provider.send(email)
        except Exception as exc:  # noqa: BLE001 - see above: the other calls of the batch go on
            log.error(
                "provider.send_raised",
                provider=self.name,
                email_id=email.email_id,
                error=redaction.describe(exc),
                stack=redaction.format_traceback(exc),
            )
            return SendOutcome(Outcome.UNKNOWN, reason=f"the provider call raised {type(exc).__name__}")
        wait = self._pause_of(outcome)
        if wait is not None or outcome.outcome in ANSWERED:
            self._proven = wait is None
        if wait is not None:
            halt.set(self.clock.now() + wait, f"{self.name} paused: {outcome.reason or outcome.status}")
        return outcome

    def _pause_of(self, outcome: SendOutcome) -> timedelta | None:
        """How long an answer pauses the provider for every worker (None: it does not)."""
        if outcome.outcome is Outcome.MISCONFIGURED:
            return self.probe_wait
        if outcome.retry_after is not None or outcome.status == 429:
            return outcome.retry_after if outcome.retry_after is not None else self.rate_limit_pause
        return None

    def close(self) -> None:
        self._crew.close()

    def _answered(self, outcome: SendOutcome, probe: bool) -> SendOutcome:
        """What an answer says about the provider as a whole (a pause, a configuration error, its end)."""
        now = self.clock.now()
        wait = self._pause_of(outcome)
        if outcome.outcome is Outcome.MISCONFIGURED:
            until = now + self.probe_wait
            self._pause(until, CONFIGURATION, outcome.reason, now)
            log.error(
                "provider.configuration_error",
                provider=self.name,
                status=outcome.status,
                reason=outcome.reason,
                dispatch="stopped for this provider; emails wait, none fail",
                next_probe_at=until.isoformat(),
            )
            return dataclasses.replace(outcome, retry_at=self._spread(until))
        if probe and outcome.outcome in ANSWERED:
            self._resume()
        if wait is not None:
            self._pause(now + wait, RATE_LIMITED, outcome.reason, now)
            log.warning(
                "provider.paused", provider=self.name, seconds=wait.total_seconds(), status=outcome.status
            )
        return outcome

    def _spread(self, until: datetime) -> datetime:
        """Never before ``until``; spread over ``jitter`` after it, so waiting emails do not all come back
        at one instant."""
        return until + self.jitter * random.random()

    def _pause(self, until: datetime, reason: str, detail: str | None, now: datetime) -> None:
        try:
            self.store.pause(self.name, until, reason, detail, now)
        except Exception as exc:  # noqa: BLE001 - the email itself still waits (its own outcome says so)
            log.error("provider.pause_not_stored", provider=self.name, error=redaction.describe(exc))

    def _resume(self) -> None:
        try:
            self.store.resume(self.name)
        except Exception as exc:  # noqa: BLE001 - the next send probes again; nothing is lost
            log.error("provider.resume_not_stored", provider=self.name, error=redaction.describe(exc))
            return
        log.warning("provider.configuration_fixed", provider=self.name, dispatch="resumed")
