"""Many rows in one statement: inserted with COPY on PostgreSQL, picked by a list of keys as one array.

``insert_rows``: many rows into one table inside the caller's transaction,
COPY on PostgreSQL, an executemany elsewhere.

A delivery-report batch writes thousands of timeline and outbox rows. As an
executemany, psycopg sends one INSERT per row (pipelined) and SQLAlchemy
processes every parameter of every row: about 28 us of CPU per outbox row.
``COPY ... FROM STDIN`` streams them as one command: about 11 us
(bench/webhooks.py). The values are bound as the columns' types bind them
(``TypeDecorator.process_bind_param``, JSON as ``jsonb``), so a row reads back
the same either way. Being part of the transaction, a COPY is rolled back with
it.

``update_from_arrays``: many rows updated by key in one statement (PostgreSQL).

``among``: ``column IN (...)`` for a list of thousands of keys. SQLAlchemy
expands the list into one parameter per key, and psycopg then parses a new
statement of thousands of placeholders on every call (a tenth of a worker's
time when it marked 3,600 outbox rows sent at once). On PostgreSQL the list
goes as one array parameter (``= ANY(...)``, served by the same index).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from psycopg.types.json import Jsonb
from pydantic_core import to_json
from sqlalchemy import JSON, ColumnElement, Connection, Table, any_, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeDecorator

COPY_FROM_ROWS = 20
"""Fewer rows than this go as an executemany (a COPY costs a round trip of its own to set up)."""


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (every one with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        conn.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    binders = [_binder(conn, table, name) for name in names]
    quote = conn.dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    raw = conn.connection.driver_connection
    assert raw is not None  # an open SQLAlchemy connection has its DBAPI connection
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([bind(row[name]) for name, bind in zip(names, binders, strict=True)])


def among(conn: Connection, column: ColumnElement[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL, an ``IN`` list elsewhere."""
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def update_from_arrays(
    conn: Connection, table: Table, where: dict[str, str], rows: Sequence[dict[str, Any]]
) -> int:
    """PostgreSQL: update many rows of ``table`` in one statement; how many rows it updated.

    ``where`` maps a column to the key of ``rows`` holding the value it must have
    (the primary key, a version); every other key of a row is a column to set.
    Each goes as one array parameter: ``UPDATE ... FROM unnest(...)``, where an
    executemany would be one UPDATE per row.
    """
    names = [name for name in rows[0] if name not in where.values()]
    keys = list(where.items())
    quote = conn.dialect.identifier_preparer.quote
    arrays = [f"CAST(:{key} AS {table.c[column].type.compile(conn.dialect)}[])" for column, key in keys] + [
        f"CAST(:{name} AS {table.c[name].type.compile(conn.dialect)}[])" for name in names
    ]
    aliases = [f"w_{i}" for i in range(len(keys))] + [f"s_{i}" for i in range(len(names))]
    statement = (
        f"UPDATE {quote(table.name)} AS t SET "
        + ", ".join(f"{quote(name)} = v.s_{i}" for i, name in enumerate(names))
        + f" FROM unnest({', '.join(arrays)}) AS v({', '.join(aliases)}) WHERE "
        + " AND ".join(f"t.{quote(column)} = v.w_{i}" for i, (column, _) in enumerate(keys))
    )
    parameters = {key: [row[key] for row in rows] for key in (*where.values(), *names)}
    return int(conn.execute(text(statement), parameters).rowcount)


def _binder(conn: Connection, table: Table, name: str) -> Callable[[Any], Any]:
    column_type = table.c[name].type
    if isinstance(column_type, JSON):
        return lambda value: None if value is None else Jsonb(value, dumps=_json_text)
    if isinstance(column_type, TypeDecorator):
        dialect = conn.dialect
        return lambda value: column_type.process_bind_param(value, dialect)
    return _same


def _json_text(value: Any) -> str:
    """JSON for a ``jsonb`` column, encoded by pydantic-core (the column keeps values, not text)."""
    return to_json(value).decode()


def _same(value: Any) -> Any:
    return value
