"""The SQL unit of work: one connection and transaction, the repositories on it, and the outbox rows."""

from __future__ import annotations

import contextlib

from sqlalchemy import Connection, Engine

from emailer.adapters.persistence import outbox
from emailer.adapters.persistence.blob_refs import SqlBlobReferences
from emailer.adapters.persistence.bulk import deferred_inserts, deferred_lookups
from emailer.adapters.persistence.inbox import SqlInbox, SqlProviderEvents
from emailer.adapters.persistence.repository import SqlEmailRepository
from emailer.adapters.persistence.suppressions import SqlSuppressions
from emailer.domain import Email
from emailer.signing import Signer
from handlers.ports import Clock, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork


class SqlUnitOfWork(AbstractUnitOfWork):
    emails: SqlEmailRepository
    inbox: SqlInbox
    provider_events: SqlProviderEvents
    blob_refs: SqlBlobReferences
    suppressions: SqlSuppressions

    def __init__(
        self, engine: Engine, clock: Clock, input_queue: str = "emailer", *, signer: Signer | None = None
    ) -> None:
        super().__init__(clock, input_queue, signer=signer)
        self.engine = engine
        self._conn: Connection | None = None

    def _begin(self) -> None:
        self._conn = self.engine.connect()
        self._conn.begin()
        self.emails = SqlEmailRepository(self._conn)
        self.inbox = SqlInbox(self._conn, self.clock)
        self.provider_events = SqlProviderEvents(self._conn, self.clock)
        self.blob_refs = SqlBlobReferences(self._conn, self.clock)
        self.suppressions = SqlSuppressions(self._conn)

    def lookups_together(self) -> contextlib.AbstractContextManager[None]:
        assert self._conn is not None
        return deferred_lookups(self._conn)

    def _touched(self) -> list[Email]:
        return self.emails.touched()

    def _flush(self, messages: list[OutgoingMessage]) -> None:
        """The transaction's writes; the inserts among them go to the server together at the end, in one
        round trip with the transaction's COMMIT (``bulk.deferred_inserts``; the version-checked updates,
        which must read their row counts, are made at once). ``commit`` follows at once: nothing else
        runs between the two, and its commit then sends nothing."""
        assert self._conn is not None
        with deferred_inserts(self._conn, commit=True):
            self.emails.flush()
            self.inbox.flush()
            self.provider_events.flush()
            outbox.write(self._conn, messages, self.clock.now())

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
