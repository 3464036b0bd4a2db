"""Engines for SQLite (the embedded default) and PostgreSQL, set up for concurrent workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    # No pre-ping (a round trip per checkout): a dead connection fails its transaction, the
    # pool is invalidated and the message is retried; recycling keeps idle ones fresh.
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 10)  # consumer, dispatch threads, scheduler, sweep, gateway
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def single_statements(engine: Engine) -> Engine:
    """``engine`` for work of ONE statement, atomic on its own: on PostgreSQL outside a transaction
    (AUTOCOMMIT: no BEGIN and COMMIT or ROLLBACK round trips around it); elsewhere ``engine`` itself
    (SQLite's connections issue their own BEGIN IMMEDIATE, and SQLAlchemy's AUTOCOMMIT reset on
    return would undo that set-up)."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so writers queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
