"""The SQL unit of work: one connection and transaction, the repositories on it, and the outbox rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from emailer.adapters.persistence.repository import SqlEmailRepository
from emailer.adapters.persistence.tables import inbox, outbox, provider_events
from emailer.domain import Email
from handlers.ports import Clock, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork


class _StagedIds:
    """Ids recorded in this transaction, written on flush; ``seen`` looks at both."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        self.staged: dict[Any, dict[str, Any]] = {}


class SqlInbox(_StagedIds):
    def __init__(self, conn: Connection, clock: Clock) -> None:
        super().__init__(conn, clock)
        self._checked: dict[str, bool] = {}

    def preload(self, message_ids: Iterable[str]) -> None:
        wanted = set(message_ids) - self._checked.keys()
        if not wanted:
            return
        query = select(inbox.c.message_id).where(inbox.c.message_id.in_(wanted))
        found = {row[0] for row in self.conn.execute(query)}
        self._checked.update({m: m in found for m in wanted})

    def seen(self, message_id: str) -> bool:
        if message_id in self.staged:
            return True
        if message_id in self._checked:
            return self._checked[message_id]
        found = self.conn.execute(select(inbox.c.message_id).where(inbox.c.message_id == message_id))
        return found.first() is not None

    def record(self, message_id: str, message_type: str) -> None:
        self.staged[message_id] = {
            "message_id": message_id,
            "message_type": message_type,
            "handled_at": self.clock.now(),
        }

    def flush(self) -> None:
        if self.staged:
            self.conn.execute(insert(inbox), list(self.staged.values()))
            self.staged = {}


class SqlProviderEvents(_StagedIds):
    def seen(self, provider: str, event_id: str) -> bool:
        if (provider, event_id) in self.staged:
            return True
        found = self.conn.execute(
            select(provider_events.c.event_id).where(
                provider_events.c.provider == provider, provider_events.c.event_id == event_id
            )
        )
        return found.first() is not None

    def record(self, provider: str, event_id: str, email_id: str) -> None:
        self.staged[(provider, event_id)] = {
            "provider": provider,
            "event_id": event_id,
            "email_id": email_id,
            "received_at": self.clock.now(),
        }

    def flush(self) -> None:
        if self.staged:
            self.conn.execute(insert(provider_events), list(self.staged.values()))
            self.staged = {}


def outbox_rows(messages: list[OutgoingMessage], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "message_id": m.message_id,
            "message_type": m.message_type,
            "intent": m.intent,
            "destination": m.destination,
            "headers": dict(m.headers),
            "body": m.body.decode(),
            "created_at": now,
        }
        for m in messages
    ]


class SqlUnitOfWork(AbstractUnitOfWork):
    emails: SqlEmailRepository
    inbox: SqlInbox
    provider_events: SqlProviderEvents

    def __init__(self, engine: Engine, clock: Clock, input_queue: str = "emailer") -> None:
        super().__init__(clock, input_queue)
        self.engine = engine
        self._conn: Connection | None = None

    def _begin(self) -> None:
        self._conn = self.engine.connect()
        self._conn.begin()
        self.emails = SqlEmailRepository(self._conn)
        self.inbox = SqlInbox(self._conn, self.clock)
        self.provider_events = SqlProviderEvents(self._conn, self.clock)

    def _touched(self) -> list[Email]:
        return self.emails.touched()

    def _flush(self, messages: list[OutgoingMessage]) -> None:
        assert self._conn is not None
        self.emails.flush()
        self.inbox.flush()
        self.provider_events.flush()
        if messages:
            self._conn.execute(insert(outbox), outbox_rows(messages, self.clock.now()))

    def _commit(self) -> None:
        assert self._conn is not None
        self._conn.commit()
        self._close()

    def _rollback(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
