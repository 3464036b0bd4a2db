"""Which blobs emails still need, and the purge that deletes the rest.

A blob is referenced by the ``attachments`` rows of emails; the count that
matters is of rows not yet purged whose email still needs the bytes: it is
queued or being dispatched, or it settled (accepted, failed, cancelled) less
than the retention ago. The count is taken from the rows themselves, never
kept in a counter that could drift.

Taking a reference and dropping one are ordered by one lock per blob, the
``blobs`` row: ``hold`` (when a SendEmail is accepted) and ``release`` (the
purge) both write that row first, which locks it for their transaction (a row
lock on PostgreSQL, the write lock on SQLite). A purge therefore either sees
the new email's rows, or finished deleting before the SendEmail checked the
blob exists (and refuses it: no email ever refers to a deleted blob).

A blob written less than the grace period ago is never deleted: an upload whose
command is still on its way looks exactly like an unused one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from emailer.adapters.persistence.mapping import timeline_row
from emailer.adapters.persistence.tables import attachments, blobs, emails, timeline
from emailer.domain import EmailStatus, TimelineEntry
from handlers.ports import BlobStore, Clock

log = structlog.get_logger(__name__)

PENDING = (EmailStatus.QUEUED.value, EmailStatus.DISPATCHING.value)
SETTLED = (EmailStatus.ACCEPTED.value, EmailStatus.FAILED.value, EmailStatus.CANCELLED.value)


class SqlBlobReferences:
    """``BlobReferences`` on the unit of work's connection: ``hold`` locks at once, until commit."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock

    def hold(self, keys: Iterable[str]) -> None:
        for key in sorted(set(keys)):  # always the same order: no deadlock between two holders
            lock_blob(self.conn, key, self.clock.now())


def lock_blob(conn: Connection, key: str, now: datetime) -> None:
    """Write the blob's row (insert or touch): it stays locked until the transaction ends."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(blobs).values(sha256=key, locked_at=now)
    conn.execute(statement.on_conflict_do_update(index_elements=["sha256"], set_={"locked_at": now}))


@dataclass(frozen=True)
class PurgeRules:
    retention: timedelta = timedelta(0)
    """Attachments of a settled email are kept this long after it settled."""
    grace: timedelta = timedelta(hours=1)
    """A blob written this recently is kept (its command may still be on its way)."""


def _settled_before(cutoff: datetime):  # type: ignore[no-untyped-def]
    """The email (``emails`` in the query) settled at or before ``cutoff``, by its timeline."""
    return exists().where(
        timeline.c.email_id == emails.c.id, timeline.c.kind.in_(SETTLED), timeline.c.at <= cutoff
    )


def _still_needed(key: str, retention_cutoff: datetime):  # type: ignore[no-untyped-def]
    return (
        select(func.count())
        .select_from(attachments.join(emails, emails.c.id == attachments.c.email_id))
        .where(
            attachments.c.sha256 == key,
            attachments.c.purged_at.is_(None),
            or_(emails.c.status.in_(PENDING), ~_settled_before(retention_cutoff)),
        )
    )


def release(engine: Engine, store: BlobStore, key: str, now: datetime, rules: PurgeRules) -> bool:
    """Delete blob ``key`` if nothing needs it any more, and say so on each email's timeline.

    True if it was deleted (or was already gone and its rows are now marked purged).
    """
    with engine.begin() as conn:
        lock_blob(conn, key, now)
        if conn.execute(_still_needed(key, now - rules.retention)).scalar_one():
            return False
        info = store.stat(key)
        if info is not None and info.modified_at > now - rules.grace:
            return False
        if info is not None:
            store.delete(key)
        rows = conn.execute(
            select(attachments.c.email_id, attachments.c.filename).where(
                attachments.c.sha256 == key, attachments.c.purged_at.is_(None)
            )
        ).all()
        conn.execute(
            update(attachments)
            .where(attachments.c.sha256 == key, attachments.c.purged_at.is_(None))
            .values(purged_at=now)
        )
        by_email: dict[str, list[str]] = {}
        for email_id, filename in rows:
            by_email.setdefault(email_id, []).append(filename)
        if by_email:
            conn.execute(
                insert(timeline),
                [
                    timeline_row(
                        email_id, TimelineEntry(now, "attachments_purged", {"sha256": key, "files": files})
                    )
                    for email_id, files in by_email.items()
                ],
            )
        conn.execute(delete(blobs).where(blobs.c.sha256 == key))
    log.info("blobs.purged", sha256=key, emails=len(by_email), was_stored=info is not None)
    return True


def purgeable(engine: Engine, now: datetime, rules: PurgeRules, limit: int = 100) -> list[str]:
    """Blobs of settled emails past the retention whose rows are not yet marked purged."""
    query = (
        select(attachments.c.sha256)
        .select_from(attachments.join(emails, emails.c.id == attachments.c.email_id))
        .where(
            attachments.c.purged_at.is_(None),
            and_(emails.c.status.in_(SETTLED), _settled_before(now - rules.retention)),
        )
        .distinct()
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def purge_attachments(engine: Engine, store: BlobStore, clock: Clock, rules: PurgeRules) -> int:
    """One purge pass: blobs that settled emails no longer need. The number deleted."""
    now = clock.now()
    return sum(release(engine, store, key, now, rules) for key in purgeable(engine, now, rules))


def collect_garbage(engine: Engine, store: BlobStore, clock: Clock, rules: PurgeRules) -> int:
    """Every stored blob older than the grace period that nothing needs: unused uploads, leftovers."""
    now = clock.now()
    old = [info.key for info in store.list() if info.modified_at <= now - rules.grace]
    return sum(release(engine, store, key, now, rules) for key in old)
