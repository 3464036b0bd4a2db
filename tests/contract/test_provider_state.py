"""The providers' shared state, over every store: the fake the gate tests use, SQL on SQLite and PostgreSQL.

What must hold wherever the state lives: a pause is seen by everyone and never
shortened, a configuration error lets exactly one probe through, and the drain
rate admits no more than its burst however many workers ask at the same instant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.engine import make_engine
from emailer.adapters.persistence.provider_state import SqlProviderState
from emailer.adapters.providers.gate import CONFIGURATION, RATE_LIMITED, DrainRate, ProviderStateStore
from tests.fakes import FakeClock, FakeProviderState

PROBE_WAIT = timedelta(seconds=60)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["in-memory-fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[ProviderStateStore]:
    if request.param == "in-memory-fake":
        yield FakeProviderState()
        return
    if request.param == "sqlite":
        engine: Engine = make_engine(f"sqlite:///{request.getfixturevalue('tmp_path') / 'state.db'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
    schema.upgrade(engine)
    try:
        yield SqlProviderState(engine, clock.now)
    finally:
        engine.dispose()


@pytest.fixture
def provider() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared: a name of this test's own


def test_a_new_provider_is_neither_paused_nor_misconfigured(
    store: ProviderStateStore, provider: str, clock: FakeClock
) -> None:
    assert store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go
    state = store.read(provider)
    assert not state.is_paused(clock.now()) and not state.misconfigured


def test_a_pause_holds_until_it_ends_and_is_never_shortened(
    store: ProviderStateStore, provider: str, clock: FakeClock
) -> None:
    until = clock.now() + timedelta(seconds=20)
    store.pause(provider, until, RATE_LIMITED, "HTTP 429", clock.now())
    store.pause(provider, clock.now() + timedelta(seconds=2), RATE_LIMITED, "HTTP 429", clock.now())
    denied = store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT)
    assert not denied.go and denied.until == until
    clock.current = until
    assert store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go


def test_a_configuration_error_lets_one_probe_through_then_waits_for_it(
    store: ProviderStateStore, provider: str, clock: FakeClock
) -> None:
    store.pause(provider, clock.now() + PROBE_WAIT, CONFIGURATION, "HTTP 401", clock.now())
    assert not store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go
    clock.advance(PROBE_WAIT.total_seconds())
    probe = store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT)
    assert probe.go and probe.probe
    assert not store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go  # waiting for the probe
    assert store.read(provider).misconfigured
    store.resume(provider)
    assert not store.read(provider).misconfigured
    assert store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go


def test_many_workers_asking_at_one_instant_get_no_more_than_the_burst(
    store: ProviderStateStore, provider: str, clock: FakeClock
) -> None:
    rate = DrainRate.of(5)

    def ask(_: int) -> bool:
        return store.admit(provider, clock.now(), rate, PROBE_WAIT).go

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(ask, range(40)))
    assert admitted == 5
    assert store.allowance(provider, clock.now(), rate, 100) == 0
    clock.advance(1)
    assert store.allowance(provider, clock.now(), rate, 100) == 5


def test_a_probe_is_taken_by_one_worker_only(
    store: ProviderStateStore, provider: str, clock: FakeClock
) -> None:
    store.pause(provider, clock.now(), CONFIGURATION, "HTTP 401", clock.now())

    def ask(_: int) -> bool:
        return store.admit(provider, clock.now(), DrainRate(), PROBE_WAIT).go

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(ask, range(16))) == 1
