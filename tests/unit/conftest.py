"""The in-memory fakes most handler tests start from (a module overrides one by defining its own)."""

from __future__ import annotations

import pytest

from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, RecordingProvider


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def uow(clock: FakeClock) -> FakeUnitOfWork:
    return FakeUnitOfWork(clock)


@pytest.fixture
def blobs(clock: FakeClock) -> FakeBlobStore:
    """The blob store of the test's emails (write times from ``clock``)."""
    return FakeBlobStore(clock)


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()
