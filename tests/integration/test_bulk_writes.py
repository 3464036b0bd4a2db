"""``bulk.deferred_inserts``, ``bulk.deferred_lookups`` and ``bulk.raw_cursor`` on a real PostgreSQL.

A commit's inserts, and a batch's lookups, reach the server together at the end (one pipeline), and
whatever psycopg raises on the way comes out as SQLAlchemy's error, so that the
worker tells a database outage (pause, no retry spent) from a message's own
failure: a duplicate key is an ``IntegrityError``, a server that is gone an
``OperationalError`` on an invalidated connection.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg import pq
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.bulk import (
    COPY_FROM_ROWS,
    deferred_inserts,
    deferred_lookups,
    insert_rows,
    when_present,
)
from emailer.adapters.persistence.engine import make_engine
from emailer.adapters.persistence.tables import emails, inbox
from emailer.infrastructure import DATABASE, unavailable_dependency

pytestmark = pytest.mark.postgres


def rows(*ids: str) -> list[dict[str, object]]:
    return [{"message_id": i, "message_type": "SendEmail", "handled_at": datetime.now(UTC)} for i in ids]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


def test_inserts_made_inside_reach_the_server_together_at_the_end(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        with deferred_inserts(conn):
            insert_rows(conn, inbox, rows("a", "b"))
            insert_rows(conn, inbox, rows("c"))
            # Not sent yet: the transaction itself does not see them.
            assert conn.execute(select(func.count()).select_from(inbox)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(inbox)).scalar_one() == 3
    assert count(pg_engine) == 3


def test_a_duplicate_key_among_them_is_sqlalchemys_integrity_error_and_rolls_back(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        insert_rows(conn, inbox, rows("a"))
    with pytest.raises(IntegrityError), pg_engine.begin() as conn, deferred_inserts(conn):
        insert_rows(conn, inbox, rows("b"))
        insert_rows(conn, inbox, rows("a"))
    assert count(pg_engine) == 1  # "b" rolled back with the rest
    with pg_engine.begin() as conn:  # the pooled connection is usable again
        insert_rows(conn, inbox, rows("c"))
    assert count(pg_engine) == 2


def test_with_commit_the_transaction_commits_in_the_same_round_trip_and_the_callers_commit_sends_nothing(
    pg_engine: Engine,
) -> None:
    with pg_engine.connect() as conn:
        conn.begin()
        raw = conn.connection.driver_connection
        assert raw is not None
        with deferred_inserts(conn, commit=True):
            insert_rows(conn, inbox, rows("a"))
            assert raw.pgconn.transaction_status == pq.TransactionStatus.IDLE  # nothing sent yet
        assert raw.pgconn.transaction_status == pq.TransactionStatus.IDLE  # committed: no transaction
        assert count(pg_engine) == 1  # seen by another connection before the caller's commit
        conn.commit()  # finds nothing to commit
        with conn.begin():  # the connection goes on as usual
            insert_rows(conn, inbox, rows("b"))
    assert count(pg_engine) == 2


def test_with_commit_a_duplicate_key_commits_nothing(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        insert_rows(conn, inbox, rows("a"))
    with pytest.raises(IntegrityError), pg_engine.begin() as conn, deferred_inserts(conn, commit=True):
        insert_rows(conn, inbox, rows("b"))
        insert_rows(conn, inbox, rows("a"))
    assert count(pg_engine) == 1  # "b" rolled back with the rest: the COMMIT after the error never ran
    with pg_engine.begin() as conn:
        insert_rows(conn, inbox, rows("c"))
    assert count(pg_engine) == 2


def test_with_commit_and_nothing_deferred_the_caller_commits(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        conn.begin()
        conn.execute(text("SELECT 1"))
        raw = conn.connection.driver_connection
        assert raw is not None
        with deferred_inserts(conn, commit=True):
            pass
        assert raw.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        conn.rollback()


@pytest.mark.parametrize(
    ("deferred", "many"), [(True, 2), (False, 2), (False, COPY_FROM_ROWS)], ids=["pipelined", "json", "copy"]
)
def test_a_server_that_is_gone_is_a_database_outage_not_the_messages_failure(
    pg_engine: Engine, deferred: bool, many: int
) -> None:
    """The connection's backend is terminated (as a restart or a cut would end it) before the inserts."""
    ids = [f"m-{n}" for n in range(many)]
    with pytest.raises(OperationalError) as raised, pg_engine.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        if deferred:
            with deferred_inserts(conn):
                insert_rows(conn, inbox, rows(*ids))
        else:
            insert_rows(conn, inbox, rows(*ids))
    assert raised.value.connection_invalidated
    assert unavailable_dependency(raised.value) == DATABASE
    assert count(pg_engine) == 0  # and the pool hands out a live connection again


def test_lookups_made_inside_go_to_the_server_together_and_are_answered_at_the_end(
    pg_engine: Engine,
) -> None:
    with pg_engine.begin() as conn:
        insert_rows(conn, inbox, rows("a", "b", "\u00e9\u200d\U0001f4e7"))
    answers: list[tuple[str, set[object]]] = []
    with pg_engine.connect() as conn, conn.begin():
        raw = conn.connection.driver_connection
        assert raw is not None
        with deferred_lookups(conn):
            assert when_present(
                conn,
                inbox.c.message_id,
                ["a", "z", "\u00e9\u200d\U0001f4e7"],
                lambda f: answers.append(("inbox", f)),
            )
            assert when_present(conn, emails.c.id, ["e-1"], lambda f: answers.append(("emails", f)))
            assert answers == []  # asked, not sent: not even the transaction's BEGIN
            assert raw.pgconn.transaction_status == pq.TransactionStatus.IDLE
        assert answers == [("inbox", {"a", "\u00e9\u200d\U0001f4e7"}), ("emails", set())]
        assert raw.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        assert not when_present(conn, inbox.c.message_id, ["a"], lambda f: answers.append(("late", f)))


def test_lookups_outside_the_block_or_on_sqlite_are_left_to_the_caller(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lookups.db'}")
    schema.upgrade(engine)
    try:
        with engine.begin() as conn, deferred_lookups(conn):
            assert not when_present(conn, inbox.c.message_id, ["a"], lambda found: None)
    finally:
        engine.dispose()


def test_a_server_gone_before_the_lookups_is_a_database_outage(pg_engine: Engine) -> None:
    answers: list[set[object]] = []
    with pytest.raises(OperationalError) as raised, pg_engine.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with deferred_lookups(conn):
            when_present(conn, inbox.c.message_id, ["a"], answers.append)
    assert raised.value.connection_invalidated
    assert unavailable_dependency(raised.value) == DATABASE
    assert answers == []
    assert count(pg_engine) == 0  # and the pool hands out a live connection again
