"""Reading published events back from the outbox: the source of the gateway's event streams.

Every event is written to the outbox in the commit that caused it, with its
stable message id, and kept for ``EMAILER_OUTBOX_RETENTION`` after it was
sent; that holds on RabbitMQ and on the embedded bus alike, so the gateway
can stream events without a subscription of its own.

* ``EmailFeed``: one email's events, in order and exactly. The n-th event of an
  email has the message id ``event_message_id(email_id, n)`` and the email row
  counts them (``event_seq``, written in the same commit), so "what comes after
  event k" is a primary-key lookup, with no clock involved: no repeats and no
  gaps, whatever order commits land in.
* ``AllEvents``: every event, in the order the commits wrote them (``created_at``,
  then message id). A commit that lands after a later one already showed is
  still caught: each look goes back ``OVERLAP`` before the newest row seen and
  skips the ids it already gave. (The outbox has no index on ``created_at`` for
  sent rows, so each look scans it: fine for ``emailer events tail`` and a few
  watchers; a service that must see every event subscribes on the bus.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, RowMapping, func, select

from emailer.adapters.persistence.tables import emails, outbox
from handlers.unit_of_work import event_message_id

OVERLAP = timedelta(seconds=30)
"""How late a commit may land (after a later one was shown) and still be streamed."""
BATCH = 500
_COLUMNS = (outbox.c.message_id, outbox.c.message_type, outbox.c.headers, outbox.c.body, outbox.c.created_at)


@dataclass(frozen=True)
class FeedEvent:
    """An event as it was published: its message id, type, headers and JSON body."""

    message_id: str
    message_type: str
    headers: dict[str, str]
    body: str
    created_at: datetime

    @property
    def email_id(self) -> str | None:
        try:
            value = json.loads(self.body).get("email_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    @property
    def cursor(self) -> str:
        """Where the all-events stream stands after this event: ``<µs since epoch>-<message id>``."""
        moment = self.created_at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        return f"{moment // timedelta(microseconds=1)}-{self.message_id}"


def parse_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The (created_at, message id) of an all-events cursor, or None if it is not one."""
    micros, sep, message_id = cursor.partition("-")
    if not sep or not micros.isdigit() or not message_id:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros)), message_id


def _event(row: RowMapping) -> FeedEvent:
    return FeedEvent(
        message_id=row["message_id"],
        message_type=row["message_type"],
        headers=dict(row["headers"]),
        body=row["body"],
        created_at=row["created_at"],
    )


class UnknownEvent(ValueError):
    """A ``Last-Event-ID`` that is not one of this email's events."""


class EmailFeed:
    """One email's events after a position; ``next_events`` returns what is new since the last call."""

    def __init__(self, engine: Engine, email_id: str, last_event_id: str | None = None) -> None:
        self.engine = engine
        self.email_id = email_id
        self._next = 1  # the sequence number of the next event to give
        self._last_event_id = last_event_id

    def next_events(self) -> list[FeedEvent]:
        with self.engine.connect() as conn:
            count = conn.execute(select(emails.c.event_seq).where(emails.c.id == self.email_id)).scalar()
            count = int(count or 0)
            if self._last_event_id is not None:
                if count == 0:
                    return []  # not stored yet: the position is found once it is
                self._next = self._position_after(self._last_event_id, count)
                self._last_event_id = None
            found: list[FeedEvent] = []
            while self._next <= count:
                wanted = range(self._next, min(count, self._next + BATCH - 1) + 1)
                ids = {event_message_id(self.email_id, n): n for n in wanted}
                rows = conn.execute(select(*_COLUMNS).where(outbox.c.message_id.in_(ids))).mappings()
                by_seq = {ids[row["message_id"]]: _event(row) for row in rows}
                found.extend(by_seq[n] for n in wanted if n in by_seq)  # a purged one is skipped
                self._next = wanted[-1] + 1
        return found

    def _position_after(self, last_event_id: str, count: int) -> int:
        for n in range(count, 0, -1):
            if event_message_id(self.email_id, n) == last_event_id:
                return n + 1
        raise UnknownEvent(f"{last_event_id!r} is not an event of email {self.email_id!r}")


class AllEvents:
    """Every event published after a cursor (or after the newest one, when none is given).

    Each look reads the ids of the rows written from ``OVERLAP`` before the
    newest row given on, and fetches those not given yet. Resumed from a cursor,
    the rows up to it (in the order streamed) count as given: nothing is
    repeated, though a commit that landed late, behind the cursor, while nobody
    was listening is not shown.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        after: tuple[datetime, str] | None = None,
        types: frozenset[str] = frozenset(),
        email_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.types = types
        self.email_id = email_id
        self._after = after
        self._given: dict[str, datetime] = {}  # ids given within OVERLAP of the newest
        self._newest: datetime | None = None
        self._started = False

    def next_events(self) -> list[FeedEvent]:
        with self.engine.connect() as conn:
            if not self._started:
                self._start(conn)
                return []
            since = self._newest - OVERLAP if self._newest is not None else None
            ids = [m for m, _ in self._ids(conn, since) if m not in self._given][:BATCH]
            if not ids:
                return []
            rows = conn.execute(
                select(*_COLUMNS)
                .where(outbox.c.message_id.in_(ids))
                .order_by(outbox.c.created_at, outbox.c.message_id)
            ).mappings()
            fresh = _in_email_order(conn, [_event(row) for row in rows])
        for event in fresh:
            self._given[event.message_id] = event.created_at
            if self._newest is None or event.created_at > self._newest:
                self._newest = event.created_at
        if self._newest is not None:
            horizon = self._newest - OVERLAP
            self._given = {m: at for m, at in self._given.items() if at >= horizon}
        return [e for e in fresh if self.email_id is None or e.email_id == self.email_id]

    def _ids(self, conn: Any, since: datetime | None) -> list[tuple[str, datetime]]:
        query = select(outbox.c.message_id, outbox.c.created_at).where(outbox.c.intent == "Publish")
        if since is not None:
            query = query.where(outbox.c.created_at >= since)
        if self.types:
            query = query.where(outbox.c.message_type.in_(self.types))
        rows = conn.execute(query.order_by(outbox.c.created_at, outbox.c.message_id))
        return [(row[0], row[1]) for row in rows]

    def _start(self, conn: Any) -> None:
        """Count as given what is there already: up to the cursor, or everything (live from now)."""
        self._started = True
        if self._after is not None:
            moment, message_id = self._after
            self._newest = moment
            same_moment = []
            for found, created_at in self._ids(conn, moment - OVERLAP):
                if created_at < moment:
                    self._given[found] = created_at
                elif created_at == moment:
                    same_moment.append(found)
            # One commit's rows share a moment: given are those up to the cursor in the streamed order.
            rows = conn.execute(select(*_COLUMNS).where(outbox.c.message_id.in_(same_moment))).mappings()
            ordered = [e.message_id for e in _in_email_order(conn, [_event(row) for row in rows])]
            upto = ordered.index(message_id) + 1 if message_id in ordered else len(ordered)
            self._given.update((found, moment) for found in ordered[:upto])
            return
        newest = conn.execute(
            select(func.max(outbox.c.created_at)).where(outbox.c.intent == "Publish")
        ).scalar()
        if newest is None:
            return
        self._newest = newest
        for found, created_at in self._ids(conn, newest - OVERLAP):
            self._given[found] = created_at


def _in_email_order(conn: Any, events: list[FeedEvent]) -> list[FeedEvent]:
    """Sorted by commit time, then email, then the email's own order (one commit writes several)."""
    email_ids = {e.email_id for e in events if e.email_id is not None}
    counts = dict(
        conn.execute(select(emails.c.id, emails.c.event_seq).where(emails.c.id.in_(email_ids))).all()
    )
    sequence: dict[str, int] = {}
    for email_id, count in counts.items():
        wanted = {e.message_id for e in events if e.email_id == email_id}
        for n in range(int(count or 0), 0, -1):  # the newest first: that is where a live stream is
            message_id = event_message_id(email_id, n)
            if message_id in wanted:
                sequence[message_id] = n
                wanted.discard(message_id)
                if not wanted:
                    break
    return sorted(events, key=lambda e: (e.created_at, e.email_id or "", sequence.get(e.message_id, 0)))
