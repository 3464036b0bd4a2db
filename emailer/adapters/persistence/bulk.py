"""Many rows in one statement: written and updated from one JSON parameter, picked by keys as one array.

``insert_rows``: many rows into one table inside the caller's transaction; on
PostgreSQL ``INSERT ... SELECT`` from ``json_to_recordset`` of the rows' JSON
(a few dozen rows: a dispatch slice), ``COPY`` from ``COPY_FROM_ROWS`` rows (a
delivery-report batch), an executemany elsewhere.

As an executemany, psycopg sends one INSERT per row (pipelined) and SQLAlchemy
processes every parameter of every row: about 28 us of CPU per outbox row.
``COPY ... FROM STDIN`` costs about 5 us a row, in Python (``write_row``), and
two round trips (the COPY, then its end). The rows' JSON, encoded by
pydantic-core in one call, is one parameter and one round trip, about 4 us of
CPU a row, but the server takes about twice as long to read a row from it as
from COPY: fewer rows, JSON; many, COPY (``COPY_FROM_ROWS``). Every value is
bound as its column's type binds it (``TypeDecorator.process_bind_param``: a
naive datetime is still refused), a JSON column's value nests in the document
as it is or goes as ``jsonb`` to COPY, and each field is read as its column's
type: a row reads back the same either way.

``update_from_rows``: many rows updated by key in one statement (PostgreSQL),
the rows as one JSON parameter too.

``deferred_lookups`` and ``when_present``: which of many keys a column holds,
for several lookups at once (PostgreSQL): a batch's inbox, email id and
suppression lookups in one round trip, where each was one (two, with the
transaction's ``BEGIN``, where they were four).

``among``: ``column IN (...)`` for a list of thousands of keys. SQLAlchemy
expands the list into one parameter per key, and psycopg then parses a new
statement of thousands of placeholders on every call (a tenth of a worker's
time when it marked 3,600 outbox rows sent at once). On PostgreSQL the list
goes as one array parameter (``= ANY(...)``, served by the same index).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb
from pydantic_core import to_json
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Table,
    TextClause,
    any_,
    bindparam,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator

COPY_FROM_ROWS = 64
"""From this many rows, ``insert_rows`` goes by COPY on PostgreSQL: the server reads a row of COPY in
about half the time it takes to read it from JSON (bench: ~1 KB outbox rows, 1024 a transaction, 8
against 16 us a row, wall), which outweighs COPY's extra round trip and its Python per row (5 against 4
us of CPU) once the rows are many; below, the JSON is cheaper every way (32 rows: 10 against 13-16 us
of CPU a row, the same wall time)."""


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (every one with the same keys) into ``table``; inside ``deferred_inserts``, at its
    end (PostgreSQL)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    names = tuple(rows[0])
    deferred: list[tuple[str, str]] | None = conn.info.get(_DEFERRED)
    if deferred is None and len(rows) >= COPY_FROM_ROWS:
        _copy(conn, table, names, rows)
        return
    binders = [(name, _binder(conn, table, name)) for name in names]
    bound = [(name, bind) for name, bind in binders if bind is not _same]
    values: Sequence[dict[str, Any]] = rows
    if bound:
        values = [{**row, **{name: bind(row[name]) for name, bind in bound}} for row in rows]
    statement, parameter = _insert_statement(conn, table, names), to_json(values).decode()
    if deferred is not None:
        deferred.append((statement, parameter))
        return
    with raw_cursor(conn) as cursor:
        cursor.execute(statement, (parameter,))


@contextmanager
def deferred_inserts(conn: Connection, *, commit: bool = False) -> Iterator[None]:
    """PostgreSQL: the ``insert_rows`` made inside go to the server together at the end, in order, in one
    round trip (psycopg's pipeline mode; JSON, never COPY, which a pipeline cannot carry). For the
    writes of a commit, which read nothing back: an accepting transaction's emails, recipients,
    timeline, inbox and outbox rows were five round trips and five statements through SQLAlchemy. An
    error (a duplicate key, the server gone) is raised at the end, as ``raw_cursor`` raises it.
    Elsewhere (SQLite) each insert is made at once, as always.

    With ``commit``, and something deferred, the transaction's ``COMMIT`` follows them in the same
    round trip (a statement of the pipeline: ``connection.commit()`` would wait for it on its own).
    What the server does is what a commit after them does: the inserts, then ``COMMIT``, which an
    error before it leaves unexecuted (the transaction is aborted, and the caller's rollback ends it).
    The caller's own commit afterwards finds the connection idle and sends nothing (psycopg's
    ``commit`` returns at once outside a transaction)."""
    deferred: list[tuple[str, str]] | None
    with _collecting(conn, _DEFERRED) as deferred:
        yield
    if not deferred:
        return
    raw = conn.connection.driver_connection
    assert raw is not None  # an open SQLAlchemy connection has its DBAPI connection
    with raw_cursor(conn) as cursor:
        if len(deferred) == 1 and not commit:
            cursor.execute(deferred[0][0], (deferred[0][1],))
            return
        with raw.pipeline():
            for statement, parameter in deferred:
                cursor.execute(statement, (parameter,))
            if commit:
                cursor.execute("COMMIT")


@contextmanager
def _collecting(conn: Connection, key: str) -> Iterator[Any]:
    """PostgreSQL: a list at ``conn.info[key]`` for the block's statements to be put in (``insert_rows``,
    ``when_present``), for the caller to send when the block has ended; None elsewhere, or inside an
    outer block of the same kind (which sends them)."""
    if conn.dialect.name != "postgresql" or key in conn.info:
        yield None
        return
    collected: list[Any] = []
    conn.info[key] = collected
    try:
        yield collected
    finally:
        del conn.info[key]


Found = Callable[[set[Any]], None]
"""What ``when_present`` calls with the keys found."""


@contextmanager
def deferred_lookups(conn: Connection) -> Iterator[None]:
    """PostgreSQL: the ``when_present`` lookups made inside go to the server together at the end, in one
    round trip (psycopg's pipeline mode; when they are the transaction's first statements, psycopg
    sends its ``BEGIN`` first and waits for it, in a pipeline too), and each one's ``then`` is called
    with what it found, in order. Errors come out as ``raw_cursor``'s do. Elsewhere, a no-op."""
    pending: list[tuple[str, list[Any], Found]] | None
    with _collecting(conn, _LOOKUPS) as pending:
        yield
    if not pending:
        return
    raw = conn.connection.driver_connection
    assert raw is not None  # an open SQLAlchemy connection has its DBAPI connection
    with _as_sqlalchemy_errors(conn), ExitStack() as cursors:
        each = [cursors.enter_context(raw.cursor()) for _ in pending]
        with raw.pipeline():
            for cursor, (statement, keys, _) in zip(each, pending, strict=True):
                cursor.execute(statement, (keys,))
        answers = [{row[0] for row in cursor.fetchall()} for cursor in each]
    for (_, _, then), found in zip(pending, answers, strict=True):
        then(found)


def when_present(conn: Connection, column: Column[Any], keys: Collection[Any], then: Found) -> bool:
    """Inside ``deferred_lookups`` (PostgreSQL): look up which of ``keys`` (values of ``column``, as
    psycopg sends them: strings) ``column`` holds with the others at its end, ``then`` called with
    those found; True. Elsewhere nothing is done, False: the caller looks up as it always does."""
    pending: list[tuple[str, list[Any], Found]] | None = conn.info.get(_LOOKUPS)
    if pending is None:
        return False
    statement = _LOOKUP_STATEMENTS.get(column)
    if statement is None:
        quote = conn.dialect.identifier_preparer.quote
        name, kind, table = quote(column.name), column.type.compile(conn.dialect), quote(column.table.name)
        statement = f"SELECT {name} FROM {table} WHERE {name} = ANY(CAST(%s AS {kind}[]))"
        _LOOKUP_STATEMENTS[column] = statement
    pending.append((statement, list(keys), then))
    return True


_LOOKUPS = "emailer.deferred_lookups"
_LOOKUP_STATEMENTS: dict[Column[Any], str] = {}
"""``when_present``'s statements, made once per column (PostgreSQL's: the only dialect it runs on)."""


@contextmanager
def raw_cursor(conn: Connection) -> Iterator[Any]:
    """A psycopg cursor on ``conn``'s connection, in its transaction, skipping SQLAlchemy's per-statement
    work (for statements made once, with one parameter). psycopg's errors come out as SQLAlchemy's
    (``DBAPIError.instance``: an ``OperationalError`` for a server that is gone, an ``IntegrityError``
    for a duplicate key), a lost connection invalidated, as SQLAlchemy's own execute would do: the
    worker tells a database outage from a message's failure by them (``emailer.infrastructure``)."""
    raw = conn.connection.driver_connection
    assert raw is not None  # an open SQLAlchemy connection has its DBAPI connection
    with _as_sqlalchemy_errors(conn), raw.cursor() as cursor:
        yield cursor


@contextmanager
def _as_sqlalchemy_errors(conn: Connection) -> Iterator[None]:
    """psycopg's errors raised inside as SQLAlchemy's, a lost connection invalidated (``raw_cursor``)."""
    try:
        yield
    except psycopg.Error as exc:
        gone = conn.dialect.is_disconnect(cast(Any, exc), conn.connection.dbapi_connection, None)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            None, None, exc, psycopg.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from exc


_DEFERRED = "emailer.deferred_inserts"


def _copy(conn: Connection, table: Table, names: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> None:
    """``COPY ... FROM STDIN`` in the caller's transaction (rolled back with it)."""
    binders = [_jsonb if isinstance(table.c[n].type, JSON) else _binder(conn, table, n) for n in names]
    quote = conn.dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    with raw_cursor(conn) as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([bind(row[name]) for name, bind in zip(names, binders, strict=True)])


_INSERTS: dict[tuple[str, tuple[str, ...]], str] = {}
"""``insert_rows``' statements (psycopg's own ``%s`` placeholder), made once per table and columns (a
handful in all)."""


def _insert_statement(conn: Connection, table: Table, names: tuple[str, ...]) -> str:
    cache_key = (table.name, names)
    statement = _INSERTS.get(cache_key)
    if statement is None:
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in names)
        record = ", ".join(f"{quote(name)} {table.c[name].type.compile(conn.dialect)}" for name in names)
        statement = (
            f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns}"
            f" FROM json_to_recordset(CAST(%s AS json)) AS v({record})"
        )
        _INSERTS[cache_key] = statement
    return statement


def among(conn: Connection, column: ColumnElement[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL, an ``IN`` list elsewhere."""
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def among_keys(conn: Connection, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``among`` for a statement made once and run many times: the list is the parameter ``name``, given
    at execution (one array on PostgreSQL, an expanding ``IN`` elsewhere)."""
    if conn.dialect.name != "postgresql":
        return column.in_(bindparam(name, expanding=True))
    return column == any_(bindparam(name, type_=ARRAY(column.type)))


def update_from_rows(
    conn: Connection, table: Table, where: dict[str, str], rows: Sequence[dict[str, Any]]
) -> int:
    """PostgreSQL: update many rows of ``table`` in one statement; how many rows it updated.

    ``where`` maps a column to the key of ``rows`` holding the value it must have
    (the primary key, a version); every other key of a row is a column to set.
    The rows go as ONE parameter, their JSON (``UPDATE ... FROM
    json_to_recordset(...)``, each field read back as its column's type), where
    an executemany would be one UPDATE per row. Arrays, one a column, were what
    this did first: psycopg dumps a list parameter element by element in Python,
    about 5 % of a worker's samples in dispatch; pydantic-core encodes the whole
    batch at once.
    """
    names = tuple(name for name in rows[0] if name not in where.values())
    statement = _update_statement(conn, table, tuple(where.items()), names)
    fields = (*where.values(), *names)
    values = [{key: row[key] for key in fields} for row in rows]
    return int(conn.execute(statement, {"rows": to_json(values).decode()}).rowcount)


_UPDATES: dict[tuple[str, str, tuple[tuple[str, str], ...], tuple[str, ...]], TextClause] = {}
"""``update_from_rows``'s statements, made once per table, key and columns (a handful in all)."""


def _update_statement(
    conn: Connection, table: Table, keys: tuple[tuple[str, str], ...], names: tuple[str, ...]
) -> TextClause:
    cache_key = (conn.dialect.name, table.name, keys, names)
    statement = _UPDATES.get(cache_key)
    if statement is None:
        quote = conn.dialect.identifier_preparer.quote
        fields = [(key, table.c[column].type) for column, key in keys] + [
            (name, table.c[name].type) for name in names
        ]
        record = ", ".join(f"{quote(field)} {kind.compile(conn.dialect)}" for field, kind in fields)
        statement = text(
            f"UPDATE {quote(table.name)} AS t SET "
            + ", ".join(f"{quote(name)} = v.{quote(name)}" for name in names)
            + f" FROM json_to_recordset(CAST(:rows AS json)) AS v({record}) WHERE "
            + " AND ".join(f"t.{quote(column)} = v.{quote(key)}" for column, key in keys)
        )
        _UPDATES[cache_key] = statement
    return statement


def _binder(conn: Connection, table: Table, name: str) -> Callable[[Any], Any]:
    column_type = table.c[name].type
    if isinstance(column_type, JSON):
        return _same  # nested in the rows' JSON as it is (None: SQL NULL, as json_to_recordset reads it)
    if isinstance(column_type, TypeDecorator):
        dialect = conn.dialect
        return lambda value: column_type.process_bind_param(value, dialect)
    return _same


def _jsonb(value: Any) -> Jsonb | None:
    """A JSON column's value for COPY: ``jsonb``, encoded by pydantic-core (as in the rows' JSON)."""
    return None if value is None else Jsonb(value, dumps=_json_text)


def _json_text(value: Any) -> str:
    return to_json(value).decode()


def _same(value: Any) -> Any:
    return value
