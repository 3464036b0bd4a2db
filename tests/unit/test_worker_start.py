"""What the worker does before and as it starts its threads: its database connections opened ahead,
the tickers' first steps spread out rather than all at start-up."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import QueuePool

from emailer.adapters.persistence.engine import make_engine
from emailer.bootstrap import App
from emailer.entrypoints.worker import STAGGER, Ticker, Worker, staggered


def worker_on(engine: Any) -> Worker:
    return Worker(cast(App, SimpleNamespace(engine=engine)))


def test_warming_opens_the_connections_at_once_and_gives_them_back(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", poolclass=QueuePool, pool_size=5)
    try:
        assert worker_on(engine).warm_database(4) == 4
        pool = cast(QueuePool, engine.pool)
        assert pool.checkedin() == 4 and pool.checkedout() == 0
    finally:
        engine.dispose()


def test_warming_our_sqlite_engine_takes_no_write_lock(tmp_path: Path) -> None:
    """make_engine's SQLite connections begin with BEGIN IMMEDIATE: connections held open together
    must not begin, or the second waits out the busy timeout for the first's lock and fails."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert worker_on(engine).warm_database(4) == 4
        with engine.begin() as connection:  # nothing was left holding the write lock
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    finally:
        engine.dispose()


def test_a_database_that_does_not_answer_does_not_stop_the_start() -> None:
    engine = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        assert worker_on(engine).warm_database(4) == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "intervals", [[1.0, 5.0, 600.0, 5.0], [1.0, 5.0, 600.0, 5.0, 10.0], [0.1, 0.05, 600.0]]
)
def test_the_first_steps_are_spread_and_each_within_its_interval(intervals: list[float]) -> None:
    firsts = staggered(intervals)
    assert firsts[0] == 0.0  # the scheduler: at once
    assert all(
        0 < first < min(interval, STAGGER) for first, interval in zip(firsts[1:], intervals[1:], strict=True)
    )
    long_ones = [first for first, interval in zip(firsts, intervals, strict=True) if interval >= STAGGER]
    assert long_ones == sorted(set(long_ones))  # no two at the same moment


def test_a_ticker_takes_its_first_step_after_its_delay_then_every_interval() -> None:
    stop = threading.Event()
    steps: list[float] = []
    two = threading.Event()

    def step() -> None:
        steps.append(time.monotonic())
        if len(steps) == 2:
            two.set()

    started = time.monotonic()
    ticker = Ticker("t", 0.05, step, stop, first_after=0.2)
    ticker.start()
    try:
        assert two.wait(5.0)
    finally:
        stop.set()
        ticker.join(5.0)
    assert steps[0] - started >= 0.2
    assert steps[1] - steps[0] >= 0.05
    assert not ticker.is_alive()


def test_a_stopped_ticker_waiting_for_its_first_step_takes_none() -> None:
    stop = threading.Event()
    steps: list[float] = []
    ticker = Ticker("t", 1.0, lambda: steps.append(1.0), stop, first_after=30.0)
    ticker.start()
    stop.set()
    ticker.join(5.0)
    assert not ticker.is_alive() and steps == []
