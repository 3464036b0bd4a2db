"""Database fixtures (every persistence test runs on SQLite and on PostgreSQL) and a sandbox per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.engine import make_engine
from emailer.adapters.persistence.tables import metadata
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import SandboxHandle, running_sandbox
from tests.factories import new_api_key


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def _pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'emailer.db'}")
        schema.upgrade(eng)
        yield eng
        eng.dispose()
    else:
        eng = request.getfixturevalue("_pg_engine")
        _empty(eng)
        yield eng


@pytest.fixture
def pg_engine(_pg_engine: Engine) -> Engine:
    _empty(_pg_engine)
    return _pg_engine


@pytest.fixture
def api_key() -> str:
    return new_api_key()


@pytest.fixture
def sandbox(api_key: str) -> Iterator[SandboxHandle]:
    """A SendGrid sandbox of this test's own, over HTTP on loopback, taking ``api_key``."""
    with running_sandbox(api_key=api_key) as handle:
        yield handle


@pytest.fixture
def control(sandbox: SandboxHandle, api_key: str) -> Iterator[SandboxClient]:
    """The sandbox's control and read-back API."""
    with SandboxClient(sandbox.url, api_key) as client:
        yield client
