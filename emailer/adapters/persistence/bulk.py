"""Many rows in one statement: written and updated from one JSON parameter, picked by keys as one array.

``insert_rows``: many rows into one table inside the caller's transaction; on
PostgreSQL ``INSERT ... SELECT`` from ``json_to_recordset`` of the rows' JSON,
an executemany elsewhere.

A delivery-report batch writes thousands of timeline and outbox rows, a
dispatch slice a few dozen of each. As an executemany, psycopg sends one INSERT
per row (pipelined) and SQLAlchemy processes every parameter of every row:
about 28 us of CPU per outbox row. ``COPY ... FROM STDIN`` (what this did next,
from 20 rows) cost about 11 us a row, in Python (``write_row``), and two round
trips (the COPY, then its end). The rows' JSON, encoded by pydantic-core in one
call, is one parameter and one round trip at any size. Every value is first
bound as its column's type binds it (``TypeDecorator.process_bind_param``: a
naive datetime is still refused), a JSON column's value nests in the document
as it is (stored as ``jsonb``, it reads back the same), and each field is read
back as its column's type: a row reads back the same either way.

``update_from_rows``: many rows updated by key in one statement (PostgreSQL),
the rows as one JSON parameter too.

``among``: ``column IN (...)`` for a list of thousands of keys. SQLAlchemy
expands the list into one parameter per key, and psycopg then parses a new
statement of thousands of placeholders on every call (a tenth of a worker's
time when it marked 3,600 outbox rows sent at once). On PostgreSQL the list
goes as one array parameter (``= ANY(...)``, served by the same index).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from pydantic_core import to_json
from sqlalchemy import JSON, ColumnElement, Connection, Table, TextClause, any_, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeDecorator


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (every one with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    names = tuple(rows[0])
    binders = [(name, _binder(conn, table, name)) for name in names]
    bound = [(name, bind) for name, bind in binders if bind is not _same]
    values: Sequence[dict[str, Any]] = rows
    if bound:
        values = [{**row, **{name: bind(row[name]) for name, bind in bound}} for row in rows]
    statement = _insert_statement(conn, table, names)
    conn.execute(statement, {"rows": to_json(values).decode()})


_INSERTS: dict[tuple[str, str, tuple[str, ...]], TextClause] = {}
"""``insert_rows``' statements, made once per table and columns (a handful in all)."""


def _insert_statement(conn: Connection, table: Table, names: tuple[str, ...]) -> TextClause:
    cache_key = (conn.dialect.name, table.name, names)
    statement = _INSERTS.get(cache_key)
    if statement is None:
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in names)
        record = ", ".join(f"{quote(name)} {table.c[name].type.compile(conn.dialect)}" for name in names)
        statement = text(
            f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns}"
            f" FROM json_to_recordset(CAST(:rows AS json)) AS v({record})"
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


def _same(value: Any) -> Any:
    return value
