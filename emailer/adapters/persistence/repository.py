"""The Email repository on SQL: loads and saves the aggregate, with optimistic versioning.

Which column holds which field is ``mapping.py``'s business; this module knows
which rows to read and write. Loaded and added emails are kept in an identity
map for the transaction; on flush, new emails are inserted in bulk and changed
ones updated with a version check (a concurrent change raises
``ConcurrencyConflict``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select, update

from emailer.adapters.persistence.bulk import among, among_keys, insert_rows, update_from_rows, when_present
from emailer.adapters.persistence.mapping import (
    Row,
    attachment_row,
    email_changes_row,
    email_from_rows,
    email_row,
    recipient_row,
    timeline_row,
)
from emailer.adapters.persistence.tables import attachments, emails, recipients, timeline
from emailer.domain import Email, EmailStatus
from handlers.errors import ConcurrencyConflict


class SqlEmailRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._identity: dict[str, Email] = {}
        self._new: list[Email] = []
        self._loaded_version: dict[str, int] = {}
        self._absent: set[str] = set()

    # ------------------------------------------------------------------ port

    def add(self, email: Email) -> None:
        self._absent.discard(email.id)
        self._identity[email.id] = email
        self._new.append(email)

    def get(self, email_id: str) -> Email | None:
        if email_id in self._identity:
            return self._identity[email_id]
        if email_id in self._absent:
            return None
        row = self.conn.execute(select(emails).where(emails.c.id == email_id)).mappings().first()
        if row is None:
            return None
        return self._load(row)

    def preload(self, email_ids: Iterable[str]) -> None:
        """Three queries for the whole batch: the emails, all their recipients, all their attachments.
        Inside ``lookups_together`` (PostgreSQL) first which of them exist, with the transaction's other
        lookups; the three queries then only for those (a batch of new emails: none)."""
        wanted = set(email_ids) - self._identity.keys()
        if not wanted:
            return
        if not when_present(self.conn, emails.c.id, wanted, lambda found: self._found(wanted, found)):
            self._found(wanted, wanted)

    def _found(self, wanted: set[str], found: set[str]) -> None:
        """``preload``'s end: ``found`` of ``wanted`` (or all of them, not looked up yet) are loaded."""
        if found:
            self._load_many(select(emails).where(among(self.conn, emails.c.id, found)))
        self._absent |= wanted - self._identity.keys()

    def claim(self, email_ids: Iterable[str], offered: Mapping[str, Email] | None = None) -> list[Email]:
        """``preload`` of the queued ones with their rows locked, skipping the rows another transaction
        holds (in id order, so two claims never wait on each other; SQLite has no row locks and
        serialises writers, and the version check on flush still catches a concurrent change there).

        The ``offered`` among them are locked first by a query of their versions alone: one still at
        the offered email's version is that email (every change of a row raises its version), which
        is kept as it is. The others, and one changed meanwhile, are loaded (a row this transaction
        locked is not skipped)."""
        wanted = sorted(set(email_ids))
        if not wanted:
            return []
        kept: list[Email] = []
        known = [i for i in wanted if offered and i in offered and i not in self._identity]
        if known:
            assert offered is not None
            locked = self.conn.execute(_statement(self.conn, "lock"), {"ids": known})
            versions: dict[str, int] = {row.id: row.version for row in locked}
            kept = [offered[i] for i in known if versions.get(i) == offered[i].version]
            self.keep(kept)
        if len(kept) == len(wanted):
            return kept
        taken = {e.id for e in kept}
        rest = [i for i in wanted if i not in taken]
        loaded = self._load_many(_statement(self.conn, "claim"), {"ids": rest})
        return sorted(kept + loaded, key=lambda e: e.id) if kept else loaded

    def keep(self, emails: Iterable[Email]) -> None:
        for email in emails:
            self._absent.discard(email.id)
            self._identity[email.id] = email
            self._loaded_version[email.id] = email.version

    def due(self, now: datetime, limit: int) -> list[Email]:
        """The due rows, locked (``SKIP LOCKED``), by ``ix_emails_due_at``; their emails in two queries."""
        query = (
            select(emails)
            .where(emails.c.due_at <= now)
            .order_by(emails.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._load_many(query)

    def unsettled(self, started_before: datetime, limit: int) -> list[str]:
        query = (
            select(emails.c.id)
            .where(
                emails.c.status == EmailStatus.DISPATCHING.value,
                emails.c.attempt_started_at <= started_before,
            )
            .order_by(emails.c.attempt_started_at)
            .limit(limit)
        )
        return list(self.conn.execute(query).scalars())

    def touched(self) -> list[Email]:
        return list(self._identity.values())

    # --------------------------------------------------------------- loading

    def _load(self, row: Row) -> Email:
        email_id = row["id"]
        recipient_rows = self.conn.execute(
            select(recipients).where(recipients.c.email_id == email_id).order_by(recipients.c.position)
        ).mappings()
        attachment_rows = self.conn.execute(
            select(attachments).where(attachments.c.email_id == email_id).order_by(attachments.c.position)
        ).mappings()
        return self._build(row, recipient_rows, attachment_rows)

    def _load_many(self, query: Select[Any], parameters: dict[str, Any] | None = None) -> list[Email]:
        """The emails ``query`` selects (rows of ``emails``), with all their recipients and attachments in
        one query each; an email already loaded in this transaction is kept as it is."""
        rows = self.conn.execute(query, parameters).mappings().all()
        fresh = [row["id"] for row in rows if row["id"] not in self._identity]
        by_email: dict[str, list[Row]] = defaultdict(list)
        attached: dict[str, list[Row]] = defaultdict(list)
        if fresh:
            for r in self.conn.execute(_statement(self.conn, "recipients"), {"ids": fresh}):
                by_email[r.email_id].append(r._mapping)
            for a in self.conn.execute(_statement(self.conn, "attachments"), {"ids": fresh}):
                attached[a.email_id].append(a._mapping)
        return [
            self._identity.get(row["id"]) or self._build(row, by_email[row["id"]], attached[row["id"]])
            for row in rows
        ]

    def _build(self, row: Row, recipient_rows: Iterable[Row], attachment_rows: Iterable[Row]) -> Email:
        email_id = row["id"]
        email = email_from_rows(row, recipient_rows, attachment_rows)
        self._identity[email_id] = email
        self._loaded_version[email_id] = email.version
        return email

    # ---------------------------------------------------------------- saving

    def flush(self) -> None:
        new_ids = {e.id for e in self._new}
        if self._new:
            self._insert_new(self._new)
        changed = [e for e in self._identity.values() if e.id not in new_ids and e.dirty]
        if changed:
            self._update(changed)
        self._update_recipients([e for e in self._identity.values() if e.id not in new_ids])
        steps = [timeline_row(e.id, t) for e in self._identity.values() for t in e.new_timeline]
        insert_rows(self.conn, timeline, steps)
        for email in self._identity.values():
            email.new_timeline.clear()
            email.dirty = False
        self._new = []

    def _insert_new(self, new: list[Email]) -> None:
        """The new emails, their recipients and their attachments: a statement each (``insert_rows``:
        on PostgreSQL the rows' JSON as one parameter, where an executemany had SQLAlchemy process, and
        the ``json`` module encode, every row's content and metadata one by one)."""
        for email in new:
            email.version = 1
        insert_rows(self.conn, emails, [email_row(e) for e in new])
        recipient_rows = [
            {"email_id": e.id, "position": i, **recipient_row(r)}
            for e in new
            for i, r in enumerate(e.recipients)
        ]
        insert_rows(self.conn, recipients, recipient_rows)
        attachment_rows = [
            {"email_id": e.id, "position": i, **attachment_row(a)}
            for e in new
            for i, a in enumerate(e.attachments)
        ]
        insert_rows(self.conn, attachments, attachment_rows)

    def _update(self, changed: list[Email]) -> None:
        """Every changed email of the transaction in one statement (an executemany on SQLite), each
        checked against the version it was loaded at: one that changed meanwhile matches no row, and
        the transaction fails."""
        rows = []
        for email in changed:
            expected = self._loaded_version[email.id]
            email.version = expected + 1
            rows.append({"b_id": email.id, "b_version": expected, **email_changes_row(email)})
        if self.conn.dialect.name == "postgresql":
            updated = update_from_rows(self.conn, emails, {"id": "b_id", "version": "b_version"}, rows)
        else:
            statement = update(emails).where(
                emails.c.id == bindparam("b_id"), emails.c.version == bindparam("b_version")
            )
            updated = self.conn.execute(statement, rows).rowcount
        if updated != len(rows):
            for email in changed:  # the transaction is rolled back: the versions are the loaded ones
                email.version = self._loaded_version[email.id]
            ids = ", ".join(e.id for e in changed[:5]) + (", ..." if len(changed) > 5 else "")
            raise ConcurrencyConflict(
                f"{len(rows) - updated} of {len(rows)} emails changed concurrently (among {ids})"
            )
        for email in changed:
            self._loaded_version[email.id] = email.version

    def _update_recipients(self, loaded: list[Email]) -> None:
        """Every changed recipient of the transaction in one statement (its email's version was checked):
        on PostgreSQL one UPDATE from the rows (one JSON parameter) of the columns a recipient's state
        changes, elsewhere an executemany (psycopg's is one UPDATE per recipient, a tenth of the
        worker's time in bench/webhooks.py)."""
        rows = []
        for email in loaded:
            for position, r in enumerate(email.recipients):
                if r.changed:
                    rows.append({"b_email_id": email.id, "b_position": position, **recipient_row(r)})
                    r.changed = False
        if not rows:
            return
        if self.conn.dialect.name == "postgresql":
            keys = {"email_id": "b_email_id", "position": "b_position"}
            state = [{k: row[k] for k in (*keys.values(), *RECIPIENT_STATE)} for row in rows]
            update_from_rows(self.conn, recipients, keys, state)
            return
        statement = update(recipients).where(
            recipients.c.email_id == bindparam("b_email_id"),
            recipients.c.position == bindparam("b_position"),
        )
        self.conn.execute(statement, rows)


def _statement(conn: Connection, name: str) -> Select[Any]:
    """The statement ``name`` for ``conn``'s dialect, made once (its keys a parameter, ``ids``): built per
    call, each cost its construction and its cache key (SQLAlchemy memoizes a statement's key on it)."""
    key = (conn.dialect.name, name)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = _BUILDERS[name](conn)
    return statement


def _queued_locked(conn: Connection, *columns: Any) -> Select[Any]:
    """``columns`` of the queued emails among ``ids``, locked, skipping those another transaction
    holds, in id order (two claims never wait on each other)."""
    return (
        select(*columns)
        .where(among_keys(conn, emails.c.id, "ids"), emails.c.status == EmailStatus.QUEUED.value)
        .order_by(emails.c.id)
        .with_for_update(skip_locked=True)
    )


_STATEMENTS: dict[tuple[str, str], Select[Any]] = {}
_BUILDERS: dict[str, Callable[[Connection], Select[Any]]] = {
    # The claim: the queued emails locked, skipping those another transaction holds, in id order.
    "claim": lambda conn: _queued_locked(conn, emails),
    # The same lock, the versions alone: the emails offered by the transaction that committed them.
    "lock": lambda conn: _queued_locked(conn, emails.c.id, emails.c.version),
    "recipients": lambda conn: (
        select(recipients)
        .where(among_keys(conn, recipients.c.email_id, "ids"))
        .order_by(recipients.c.email_id, recipients.c.position)
    ),
    "attachments": lambda conn: (
        select(attachments)
        .where(among_keys(conn, attachments.c.email_id, "ids"))
        .order_by(attachments.c.email_id, attachments.c.position)
    ),
}


RECIPIENT_STATE = (
    "status", "status_reason", "status_at", "opens", "clicks", "complained", "unsubscribed",
    "delivery_implied",
)  # fmt: skip
"""The columns of a recipient that its state changes (address, kind and name never do)."""
