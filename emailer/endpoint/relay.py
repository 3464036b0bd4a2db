"""The outbox relay: publish what a commit wrote, and sweep up what a crash left behind.

Rows are marked sent only after the broker confirmed them. A failed publish is
not an error for the caller: the rows stay pending and the sweep takes them.
Subscribers see a message at least once, always with the same message id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from emailer.adapters.persistence.outbox_store import OutboxStore
from handlers.ports import Clock, OutgoingMessage

log = structlog.get_logger(__name__)

Publish = Callable[[Sequence[OutgoingMessage]], None]


class OutboxRelay:
    def __init__(self, publish: Publish, store: OutboxStore, clock: Clock) -> None:
        self._publish = publish
        self.store = store
        self.clock = clock

    def publish_committed(self, messages: Sequence[OutgoingMessage]) -> bool:
        """Publish right after the commit; True if all were confirmed and marked sent."""
        if not messages:
            return True
        try:
            self._publish(messages)
        except Exception as exc:  # noqa: BLE001 - the sweep will publish them
            log.warning("relay.publish_failed_left_for_sweep", count=len(messages), error=str(exc))
            return False
        self.store.mark_dispatched([m.message_id for m in messages], self.clock.now())
        return True

    def publish_now(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish without an outbox row (commands the gateway forwards); raises if not confirmed."""
        self._publish(messages)

    def sweep(self, older_than: timedelta) -> int:
        """Publish rows still pending after ``older_than``; returns how many."""
        count = self.store.sweep(lambda rows: self._publish(rows), self.clock.now(), older_than)
        if count:
            log.info("relay.swept", count=count)
        return count
