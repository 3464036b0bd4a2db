"""What was already handled: incoming message ids (the inbox) and applied provider callback ids.

Both are "seen ids": looked up and recorded inside the unit of work's
transaction, written on flush with the rest of it. ``SeenIds`` is that one
implementation; ``SqlInbox`` and ``SqlProviderEvents`` give it the shape of
their ports. A message id longer than the inbox column is kept as
``sha256:<hex>`` of it (``inbox_key``): stable across redeliveries, so such a
message is deduplicated like any other and never fails its batch. The inbox
has its own purge: an id kept longer than any redelivery can take is enough.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, or_, select, text, tuple_

from emailer.adapters.persistence.bulk import among, insert_rows, when_present
from emailer.adapters.persistence.tables import INBOX_ID_CHARS, inbox, provider_events
from handlers.ports import Clock

Key = tuple[str, ...]


def inbox_key(message_id: str) -> str:
    """What the inbox stores for ``message_id``: itself if it fits the column, else its sha256."""
    if len(message_id) <= INBOX_ID_CHARS:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


class SeenIds:
    """Keys of ``table`` (its primary key columns) seen before, or recorded in this transaction."""

    def __init__(self, conn: Connection, table: Table, clock: Clock, stamp_column: str) -> None:
        self.conn = conn
        self.table = table
        self.clock = clock
        self.stamp_column = stamp_column
        self.key_columns = list(table.primary_key.columns)
        self.staged: dict[Key, dict[str, Any]] = {}
        self._checked: dict[Key, bool] = {}
        self._written: set[Key] = set()  # inserted by a claim: staging them again writes nothing

    def preload(self, keys: Iterable[Key]) -> None:
        """Look these keys up in one round trip; ``seen`` then answers from memory."""
        wanted = set(keys) - self._checked.keys()
        if not wanted:
            return
        if len(self.key_columns) == 1 and when_present(
            self.conn,
            self.key_columns[0],
            [key[0] for key in wanted],
            lambda found: self._checked.update({key: key[0] in found for key in wanted}),
        ):
            return  # with the transaction's other lookups (``bulk.deferred_lookups``)
        query = select(*self.key_columns).where(self._among(wanted))
        found = {tuple(row) for row in self.conn.execute(query)}
        self._checked.update({key: key in found for key in wanted})

    def seen(self, key: Key) -> bool:
        if key in self.staged:
            return True
        if key not in self._checked:
            query = select(*self.key_columns).where(self._among({key}))
            self._checked[key] = self.conn.execute(query).first() is not None
        return self._checked[key]

    def record(self, key: Key, **columns: Any) -> None:
        if key in self._written:  # a claim inserted it in this transaction: only remember it is seen
            self._checked[key] = True
            return
        row = dict(zip((c.name for c in self.key_columns), key, strict=True))
        self.staged[key] = {**row, **columns, self.stamp_column: self.clock.now()}

    def unchecked(self, keys: Iterable[Key]) -> set[Key]:
        """Those of ``keys`` this transaction has neither looked up, claimed nor recorded."""
        return set(keys) - self._checked.keys() - self.staged.keys()

    def claimed(self, wanted: Iterable[Key], new: Iterable[Key]) -> None:
        """``wanted`` were inserted in this transaction already where not there before (``new``)."""
        fresh = set(new)
        self._written |= fresh
        self._checked.update({key: key not in fresh for key in wanted})

    def flush(self) -> None:
        rows = [row for key, row in self.staged.items() if key not in self._written]
        insert_rows(self.conn, self.table, rows)  # one statement (an executemany was one INSERT a row)
        self._checked.update(dict.fromkeys(self.staged, True))
        self.staged = {}

    def _among(self, keys: set[Key]) -> Any:
        if len(self.key_columns) == 1:  # one array parameter: the same statement text for any batch
            return among(self.conn, self.key_columns[0], [key[0] for key in keys])
        if len(keys) == 1:
            (key,) = keys
            return and_(*(column == value for column, value in zip(self.key_columns, key, strict=True)))
        if len(self.key_columns) == 2:
            # (provider, event id): one IN list per provider, which the primary key's index serves;
            # a row-value IN over thousands of pairs was planned as a scan of the whole table.
            first, second = self.key_columns
            by_first: dict[str, list[str]] = {}
            for a, b in sorted(keys):
                by_first.setdefault(a, []).append(b)
            return or_(*(and_(first == a, among(self.conn, second, bs)) for a, bs in by_first.items()))
        return tuple_(*self.key_columns).in_(sorted(keys))


class SqlInbox:
    """``handlers.ports.Inbox``: incoming message ids already handled."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.ids = SeenIds(conn, inbox, clock, "handled_at")

    def seen(self, message_id: str) -> bool:
        return self.ids.seen((inbox_key(message_id),))

    def record(self, message_id: str, message_type: str) -> None:
        self.ids.record((inbox_key(message_id),), message_type=message_type)

    def preload(self, message_ids: Iterable[str]) -> None:
        self.ids.preload((inbox_key(m),) for m in message_ids)

    def flush(self) -> None:
        self.ids.flush()


class SqlProviderEvents:
    """``handlers.ports.ProviderEvents``: provider callback ids already applied."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.ids = SeenIds(conn, provider_events, clock, "received_at")

    def seen(self, provider: str, event_id: str) -> bool:
        return self.ids.seen((provider, event_id))

    def record(self, provider: str, event_id: str, email_id: str) -> None:
        self.ids.record((provider, event_id), email_id=email_id)

    def claim(self, events: Iterable[tuple[str, str, str]]) -> None:
        """On PostgreSQL one statement records the batch's new event ids and says which were new
        (sorted, so that concurrent claims lock in one order); elsewhere a lookup of them all."""
        email_of: dict[Key, str] = {(provider, event_id): email_id for provider, event_id, email_id in events}
        if self.ids.conn.dialect.name != "postgresql":
            self.ids.preload(email_of)
            return
        wanted = sorted(self.ids.unchecked(email_of))
        if not wanted:
            return
        rows = self.ids.conn.execute(
            CLAIM,
            {
                "providers": [p for p, _ in wanted],
                "event_ids": [e for _, e in wanted],
                "email_ids": [email_of[k] for k in wanted],
                "now": self.ids.clock.now(),
            },
        )
        self.ids.claimed(wanted, [(p, e) for p, e in rows])

    def flush(self) -> None:
        self.ids.flush()


CLAIM = text(
    "INSERT INTO provider_events (provider, event_id, email_id, received_at)"
    " SELECT p, e, m, :now FROM unnest(CAST(:providers AS text[]), CAST(:event_ids AS text[]),"
    " CAST(:email_ids AS text[])) AS t(p, e, m)"
    " ON CONFLICT DO NOTHING RETURNING provider, event_id"
)
"""One round trip for a batch's provider event ids: what it returns was not recorded before."""


def purge_inbox(engine: Engine, handled_before: datetime) -> int:
    """Delete inbox ids handled before ``handled_before``; returns how many."""
    with engine.begin() as conn:
        result = conn.execute(delete(inbox).where(inbox.c.handled_at < handled_before))
    return int(result.rowcount)


def purge_provider_events(engine: Engine, received_before: datetime) -> int:
    """Delete provider event ids received before ``received_before`` (EMAILER_PROVIDER_EVENT_RETENTION)."""
    with engine.begin() as conn:
        result = conn.execute(delete(provider_events).where(provider_events.c.received_at < received_before))
    return int(result.rowcount)
