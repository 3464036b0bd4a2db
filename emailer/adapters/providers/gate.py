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

import dataclasses
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from emailer import redaction
from handlers.ports import Clock, MessageLookup, Outcome, OutgoingEmail, Provider, SendOutcome, lookup_of

log = structlog.get_logger(__name__)

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


# ------------------------------------------------------------------ decisions (pure)


def decide(state: ProviderState, now: datetime, rate: DrainRate, probe_wait: timedelta) -> tuple[
    Admission, ProviderState
]:  # fmt: skip
    """May one send go now? The answer and the state after it."""
    if state.paused_until is not None and now < state.paused_until:
        why = "configuration error" if state.misconfigured else "paused"
        return Admission(False, state.paused_until, f"{state.provider} {why}: {state.detail}"), state
    if state.misconfigured:
        # The pause is over: this send is the probe; everyone else waits for its answer.
        return Admission(True, probe=True), dataclasses.replace(state, paused_until=now + probe_wait)
    if not rate.limited:
        return Admission(True), state
    stamp = now.timestamp()
    tat = max(state.rate_tat or 0.0, stamp)
    if tat - rate.tolerance > stamp + EPSILON:
        until = datetime.fromtimestamp(tat - rate.tolerance, UTC)
        return Admission(False, until, f"{state.provider} drain rate ({rate.per_second:g}/s)"), state
    return Admission(True), dataclasses.replace(state, rate_tat=tat + rate.interval)


def allowance(state: ProviderState, now: datetime, rate: DrainRate, limit: int) -> int:
    """How many sends the provider would take now (at most ``limit``): what a scheduler pass may wake."""
    if state.is_paused(now):
        return 0
    if state.misconfigured:
        return 1  # the probe
    if not rate.limited:
        return limit
    stamp = now.timestamp()
    tat = max(state.rate_tat or 0.0, stamp)
    room = math.floor((stamp + rate.tolerance - tat + EPSILON) / rate.interval) + 1
    return max(0, min(limit, room))


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

    def admit(self, provider: str, now: datetime, rate: DrainRate, probe_wait: timedelta) -> Admission: ...

    def pause(
        self, provider: str, until: datetime, reason: str, detail: str | None, now: datetime
    ) -> None: ...

    def resume(self, provider: str) -> None: ...

    def reprobe(self, provider: str, now: datetime) -> None: ...

    def allowance(self, provider: str, now: datetime, rate: DrainRate, limit: int) -> int: ...

    def read(self, provider: str) -> ProviderState: ...

    def read_all(self) -> list[ProviderState]: ...


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
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.store = store
        self.clock = clock
        self.rate = rate
        self.probe_wait = probe_wait
        self.rate_limit_pause = rate_limit_pause
        self.jitter = jitter
        self.lookup: MessageLookup | None = lookup_of(provider)
        """Passed through: asking the provider what it holds is no send (no pause or rate applies)."""

    def __repr__(self) -> str:
        return f"ProviderGate({self.provider!r}, rate={self.rate.per_second:g}/s)"

    def prepare(self, email: OutgoingEmail) -> None:
        """Building the request is no call to the provider: straight through."""
        self.provider.prepare(email)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        try:
            admission = self.store.admit(self.name, self.clock.now(), self.rate, self.probe_wait)
        except Exception as exc:  # noqa: BLE001 - cannot tell whether we may send: do not, nothing is lost
            log.warning("provider.gate_unavailable", provider=self.name, error=redaction.describe(exc))
            return SendOutcome.postponed(self.clock.now() + STORE_DOWN_WAIT, "provider state unavailable")
        if not admission.go:
            assert admission.until is not None
            return SendOutcome.postponed(self._spread(admission.until), admission.reason or "provider paused")
        outcome = self.provider.send(email)
        now = self.clock.now()
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
        if admission.probe and outcome.outcome in ANSWERED:
            self._resume()
        if outcome.retry_after is not None or outcome.status == 429:
            wait = outcome.retry_after if outcome.retry_after is not None else self.rate_limit_pause
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
