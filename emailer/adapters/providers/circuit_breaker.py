"""A circuit breaker around the provider: stop calling a provider that keeps failing.

Closed: calls go through. After ``threshold`` transient failures in a row it
opens for ``cooldown``: dispatches are postponed without calling the provider.
Then one trial call is let through (half-open); success closes it again.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class CircuitBreaker:
    def __init__(self, threshold: int = 5, cooldown: timedelta = timedelta(seconds=30)) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._open_until: datetime | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    def allow(self, now: datetime) -> datetime | None:
        """None if a call may go through now, else when to try again."""
        with self._lock:
            if self._open_until is None:
                return None
            if now < self._open_until or self._trial_running:
                return max(self._open_until, now + timedelta(seconds=1))
            self._trial_running = True
            return None

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = None
            self._trial_running = False

    def record_failure(self, now: datetime) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.threshold:
                self._open_until = now + self.cooldown
