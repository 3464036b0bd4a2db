"""Delayed retries on the embedded bus (``memory://``), where no queue can hold a message for a TTL.

kombu's in-memory transport has no TTL and no dead-lettering, so a message
waiting for its delayed retry waits here instead: a heap ordered by due time
and one thread that republishes each message to the input queue when it is
due. Like everything on the embedded bus, a waiting message lives and dies with
the process: if ``emailer run`` stops or dies, it is gone (``close`` logs how
many). On RabbitMQ the delay queues hold them instead, and survive anything.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence

import structlog

from emailer import redaction
from handlers.ports import OutgoingMessage

_log = structlog.get_logger(__name__)

RETRY_PUBLISH_AFTER = 1.0  # seconds, when republishing a due message failed


class DelayedRedelivery:
    """Publishes each scheduled message when it is due, from a thread of its own."""

    def __init__(self, publish: Callable[[Sequence[OutgoingMessage]], None]) -> None:
        self._publish = publish
        self._heap: list[tuple[float, int, OutgoingMessage]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def schedule(self, message: OutgoingMessage, delay: float) -> None:
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the delayed redelivery is closed")
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), message))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="delayed-retries", daemon=True)
                self._thread.start()
            self._wakeup.notify()

    @property
    def waiting(self) -> int:
        with self._wakeup:
            return len(self._heap)

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            dropped = len(self._heap)
            self._heap.clear()
            self._wakeup.notify()
        if dropped:
            _log.warning("bus.delayed_retries_dropped", count=dropped, why="the embedded bus is closing")
        if self._thread is not None:
            self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                if self._closed:
                    return
                due, order, message = heapq.heappop(self._heap)
            try:
                self._publish([message])
            except Exception as exc:  # noqa: BLE001 - kept: tried again shortly
                _log.warning(
                    "bus.delayed_retry_publish_failed",
                    message_id=message.message_id,
                    error=redaction.describe(exc),
                )
                with self._wakeup:
                    if not self._closed:
                        heapq.heappush(self._heap, (time.monotonic() + RETRY_PUBLISH_AFTER, order, message))
