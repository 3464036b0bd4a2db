"""The outbox relay on a thread of its own, so the consumer goes on with its next batch meanwhile.

Relaying a batch means publishing its messages and waiting for the broker's
confirms, then marking the rows sent: a wait on RabbitMQ and one on the
database. Done inline, the consumer could not start the next transaction
until both were over. ``BackgroundRelay.publish_committed`` hands the
committed messages to one relay thread and returns; the thread publishes
batches in the order they were committed (so a subscriber sees an email's
events in order, as before).

Nothing is weakened: the rows were committed before they are handed over,
and the deliveries that caused them were acked after that commit, as before.
What the relay has not published when the process dies stays pending in the
outbox, and a sweep publishes it: the same as a crash between the commit and
an inline publish. While the relay holds rows, this process's sweep leaves
them alone (``Outbox.hold``), so a relay running behind is not a second
publish. At most ``depth`` batches wait: beyond that ``publish_committed``
blocks, and the relay sets the pace.

Marking rows sent is a database round trip that no subscriber waits for: what
was committed while a round was being published goes out first, and the rows
of several rounds are marked in one statement once nothing waits (at most
``MARK_AFTER`` rows wait to be marked). A crash before the marking leaves
published rows pending, which the sweep publishes again: at least once, with
the same message ids, as the outbox always promised.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import structlog

from emailer import redaction
from emailer.adapters.persistence.outbox import Outbox
from handlers.ports import OutgoingMessage

log = structlog.get_logger(__name__)

DEPTH = 2
"""Committed batches that may wait for the relay before the consumer waits for it."""
MARK_AFTER = 2000
"""Published rows are marked sent once nothing waits to be published, or once this many wait to be
marked (a bound on what a crash leaves for the sweep to publish again)."""


class BackgroundRelay:
    """``Relay`` for the pipeline: publishes through ``outbox`` on a thread of its own."""

    def __init__(self, outbox: Outbox, depth: int = DEPTH) -> None:
        self.outbox = outbox
        self._batches: queue.Queue[list[OutgoingMessage] | None] = queue.Queue(maxsize=depth)
        self._handed = 0
        """Batches handed over so far."""
        self._relayed = 0
        """Of them, how many the thread has published (or given back to the sweep)."""
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def publish_committed(self, messages: Sequence[OutgoingMessage]) -> bool:
        """Hand committed messages to the relay thread; True once it has them (it publishes them later)."""
        if not messages:
            return True
        batch = list(messages)
        self.outbox.hold([m.message_id for m in batch])
        with self._progress:
            self._handed += 1
        self._batches.put(batch)
        return True

    def wait_relayed(self, timeout: float) -> bool:
        """Wait until what was handed over so far is published (or left to the sweep); False if
        ``timeout`` passed first. Nothing depends on it: it lets a caller step aside while the relay
        publishes (its confirms then wait on the broker, not on this process's interpreter lock)."""
        with self._progress:
            target = self._handed
            return self._progress.wait_for(lambda: self._relayed >= target, timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Publish what was handed over, then stop; False if that took longer than ``timeout``
        (what is left stays pending in the outbox, for a sweep)."""
        self._batches.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        unmarked: list[str] = []
        """Published and confirmed, not marked sent yet (held until they are)."""
        stopping = False
        while True:
            batch, rounds, stop = self._waiting(block=not unmarked and not stopping)
            stopping = stopping or stop
            if batch:
                try:
                    published = self.outbox.publish_only(batch)  # never raises for a failed publish
                except Exception as exc:  # noqa: BLE001 - the thread must outlive any surprise
                    log.error("outbox.relay_failed", count=len(batch), error=redaction.describe(exc))
                    published = False
                ids = [m.message_id for m in batch]
                if published:
                    unmarked += ids
                else:
                    self.outbox.release(ids)  # pending: the sweep publishes them
                with self._progress:
                    self._relayed += rounds
                    self._progress.notify_all()
                if len(unmarked) < MARK_AFTER:
                    continue  # what was committed meanwhile is published before the marking
            if unmarked:
                try:
                    self.outbox.mark_sent(unmarked)  # a failure leaves them to the sweep (deduped)
                except Exception as exc:  # noqa: BLE001 - the thread must outlive any surprise
                    log.error("outbox.relay_failed", count=len(unmarked), error=redaction.describe(exc))
                finally:
                    self.outbox.release(unmarked)
                    unmarked = []
            if stopping:
                return

    def _waiting(self, block: bool) -> tuple[list[OutgoingMessage], int, bool]:
        """What was handed over (waiting for it if ``block``), all of it in one round, in commit order:
        one confirm wait for all of it; how many batches it joins; and whether ``close`` asked to stop."""
        batch: list[OutgoingMessage] = []
        rounds = 0
        try:
            first = self._batches.get(block=block)
        except queue.Empty:
            return batch, rounds, False
        if first is None:
            return batch, rounds, True
        batch += first
        rounds += 1
        while True:
            try:
                more = self._batches.get_nowait()
            except queue.Empty:
                return batch, rounds, False
            if more is None:
                return batch, rounds, True
            batch += more
            rounds += 1
