"""The crew making the provider gate's calls of a batch: how many at once, in what order, what raises."""

from __future__ import annotations

import threading

import pytest

from emailer.adapters.providers.crew import Crew

WAIT_S = 10.0


class Meter:
    """Counts the calls in progress; each call waits at a barrier of ``together`` calls first."""

    def __init__(self, together: int) -> None:
        self.barrier = threading.Barrier(together, timeout=WAIT_S)
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[str] = set()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)
        try:
            self.barrier.wait()  # broken (and raising) unless `together` calls are in progress at once
        finally:
            with self.lock:
                self.now -= 1
        return item * 10


def test_a_batch_runs_size_calls_at_once_the_callers_thread_among_them() -> None:
    crew = Crew(4, "test-crew")
    meter = Meter(together=4)
    try:
        assert crew.map(meter, list(range(12))) == [i * 10 for i in range(12)]
    finally:
        crew.close()
    assert meter.most == 4
    assert threading.current_thread().name in meter.threads
    assert len(meter.threads) == 4


def test_results_come_in_the_order_of_the_items_whatever_order_the_calls_end_in() -> None:
    second_done = threading.Event()

    def call(item: str) -> str:
        if item == "first":
            assert second_done.wait(WAIT_S)  # ends after the second
        else:
            second_done.set()
        return item.upper()

    crew = Crew(2, "test-crew")
    try:
        assert crew.map(call, ["first", "second"]) == ["FIRST", "SECOND"]
    finally:
        crew.close()


def test_a_call_that_raises_lets_the_others_run_and_is_raised_once_they_ended() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def call(item: int) -> int:
        if item == 1:
            raise ValueError("boom")
        with lock:
            ran.append(item)
        return item

    crew = Crew(3, "test-crew")
    try:
        with pytest.raises(ValueError, match="boom"):
            crew.map(call, list(range(9)))
        assert sorted(ran) == [0, 2, 3, 4, 5, 6, 7, 8]
        assert crew.map(call, [0, 2]) == [0, 2]  # the crew goes on
    finally:
        crew.close()


def test_batches_from_several_callers_share_the_crew() -> None:
    crew = Crew(3, "test-crew")
    meter = Meter(together=4)  # one caller and the crew's two threads on three calls, another on one
    results: list[list[int]] = []

    def caller(items: list[int]) -> None:
        results.append(crew.map(meter, items))

    callers = [
        threading.Thread(target=caller, args=([1, 2, 3],)),
        threading.Thread(target=caller, args=([4],)),
    ]
    try:
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(WAIT_S)
    finally:
        crew.close()
    assert sorted(results) == [[10, 20, 30], [40]]


def crew_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-crew-close")]


def test_close_ends_the_threads_and_one_call_needs_none() -> None:
    crew = Crew(3, "test-crew-close")
    assert crew.map(lambda x: x + 1, [1]) == [2]  # the caller's thread alone
    assert crew_threads() == []
    assert crew.map(lambda x: x + 1, [1, 2, 3]) == [2, 3, 4]
    assert len(crew_threads()) == 2
    crew.close()
    assert crew_threads() == []
    assert crew.map(lambda x: x, []) == []
    assert crew.map(lambda x: x * 2, [1, 2]) == [2, 4]  # used again: its threads made again
    crew.close()
    assert crew_threads() == []
