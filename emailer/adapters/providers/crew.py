"""A crew of threads that work through a batch of blocking calls together, the caller among them.

The provider gate makes up to ``size`` provider calls at once (each one blocks on
its HTTP exchange). A ``ThreadPoolExecutor.map`` costs, for every call, a
``Future`` (a condition and its lock), a work item through the pool's queue and a
notification of the waiting caller. Here a batch is one object: the caller hands
it to as many idle threads as it has calls beyond its own (one queue entry each),
every thread, the caller's included, takes the batch's next call until none is
left, and the caller is woken once, by whichever call ends last, if it did not
end it itself. What each call costs on top of its own work: taking a number
under a lock, and counting itself done under it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    """The calls of one ``Crew.map``: which is next, which are done, their results in order."""

    def __init__(self, call: Callable[[T], R], items: Sequence[T]) -> None:
        self._call = call
        self._items = items
        self.results: list[R | None] = [None] * len(items)
        self.error: BaseException | None = None
        self._next = 0
        self._done = 0
        self._lock = threading.Lock()
        self.finished = threading.Event()

    def work(self) -> None:
        """Make the batch's calls, one after another, until none is left to take."""
        while (index := self._take()) is not None:
            try:
                self.results[index] = self._call(self._items[index])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of map, never lost
                with self._lock:
                    self.error = self.error or exc
            with self._lock:
                self._done += 1
                last = self._done == len(self._items)
            if last:
                self.finished.set()

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self._items):
                return None
            self._next += 1
            return self._next - 1


class Crew:
    """Up to ``size`` calls of a batch at once: the caller's thread and up to ``size - 1`` of its own
    (made when first needed, kept idle between batches; ``close`` ends them, and a later batch makes
    them again). Thread-safe: batches from several callers share the threads."""

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("a crew has at least one thread: its caller's")
        self.size = size
        self._name = name
        self._work: queue.SimpleQueue[_Batch[object, object] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def map(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[call(item) for item in items]``, up to ``size`` at once; in the order of ``items``. If a
        call raises, the others still run, and the first exception is raised once they all ended."""
        if not items:
            return []
        batch: _Batch[T, R] = _Batch(call, items)
        helpers = self._helpers(min(self.size, len(items)) - 1)
        for _ in range(helpers):
            self._work.put(batch)  # type: ignore[arg-type]  # the threads only call batch.work()
        batch.work()
        batch.finished.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results  # type: ignore[return-value]  # every item has its result now

    def close(self) -> None:
        """End the threads once the batches handed to them are done."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._work.put(None)
        for thread in threads:
            thread.join()

    def _helpers(self, wanted: int) -> int:
        """Make threads up to ``wanted`` (never more than ``size - 1``); how many there are to help."""
        if wanted <= 0:
            return 0
        with self._lock:
            while len(self._threads) < wanted:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            return wanted

    def _serve(self) -> None:
        while (batch := self._work.get()) is not None:
            batch.work()
