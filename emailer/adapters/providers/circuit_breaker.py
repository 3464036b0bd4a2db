"""A circuit breaker that is itself a provider: it guards another provider that keeps failing.

Closed: every send goes through. After ``threshold`` failures in a row it opens
for ``cooldown``: sends are answered ``POSTPONED`` (try again when the cooldown
ends) without calling the provider, and the email waits without spending an
attempt. When the cooldown is over one send goes through as the trial
(half-open); sends meanwhile are postponed by ``trial_wait``.

Because admission and the provider call happen together here, every trial is a
real provider call and its outcome always settles the breaker: an answer
(accepted or rejected: the provider is up) closes it; a transient failure, an
unknown outcome (no answer came) or an exception opens it for another cooldown.
``prepare`` (building the request) goes straight to the provider: it is not a call.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from handlers.ports import Clock, MessageLookup, Outcome, OutgoingEmail, Provider, SendOutcome, lookup_of

ANSWERED = frozenset({Outcome.ACCEPTED, Outcome.REJECTED, Outcome.MISCONFIGURED})
"""Outcomes that show the provider is working (a rejection is about the email, not the provider; a
refused API key is about our configuration, which the provider gate handles for every worker)."""


class CircuitBreaker:
    """A ``Provider`` that guards ``provider`` (same name, so the emails record the real one)."""

    def __init__(
        self,
        provider: Provider,
        clock: Clock,
        threshold: int = 5,
        cooldown: timedelta = timedelta(seconds=30),
        trial_wait: timedelta = timedelta(seconds=1),
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.provider = provider
        self.name = provider.name
        self.lookup: MessageLookup | None = lookup_of(provider)
        """Passed through unguarded: a lookup asks another endpoint, and its failure is no answer."""
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.trial_wait = trial_wait
        self._failures = 0
        self._open_until: datetime | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.provider!r}, threshold={self.threshold}, cooldown={self.cooldown})"

    def prepare(self, email: OutgoingEmail) -> None:
        """Building a request calls no provider: it neither needs admission nor counts as an answer."""
        self.provider.prepare(email)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        retry_at, trial = self._admit(self.clock.now())
        if retry_at is not None:
            return SendOutcome.postponed(retry_at, f"{self.name} circuit open after repeated failures")
        answered = False
        try:
            outcome = self.provider.send(email)
            answered = outcome.outcome in ANSWERED
        finally:
            self._settle(answered, trial, self.clock.now())
        return outcome

    def _admit(self, now: datetime) -> tuple[datetime | None, bool]:
        """(None, is_trial) if the call may go through now, else (when to try again, False)."""
        with self._lock:
            if self._open_until is None:
                return None, False
            if now < self._open_until:
                return self._open_until, False
            if self._trial_running:
                return now + self.trial_wait, False
            self._trial_running = True
            return None, True

    def _settle(self, answered: bool, trial: bool, now: datetime) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
            if answered:
                self._failures = 0
                self._open_until = None
                return
            self._failures += 1
            if trial or self._failures >= self.threshold:
                self._open_until = now + self.cooldown
