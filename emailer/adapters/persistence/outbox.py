"""The outbox: the rows a commit writes, the relay that publishes them after it, and the sweep.

* ``write`` runs inside the unit of work's transaction: the outgoing messages
  become rows together with the state that caused them.
* ``Outbox.publish_committed`` is the relay: right after the commit it
  publishes what the commit wrote (through the ``Publisher`` port, which
  returns only once the broker confirmed) and only then marks the rows sent.
  A failed publish is not the caller's problem: the rows stay pending.
* ``Outbox.sweep`` takes what a crash or a failed publish left pending. It
  *claims* rows in a short transaction (``claimed_until``, a lease set under
  ``SKIP LOCKED`` on PostgreSQL; SQLite serialises writers instead), publishes
  with no transaction open, then marks them sent. Competing sweepers take
  different rows; rows a crashed sweeper had claimed are taken again once its
  lease ends.

Subscribers see a message at least once, always with the same message id.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, RowMapping, Update, bindparam, delete, func, or_, select, update

from contracts.wire import H
from emailer import redaction
from emailer.adapters.persistence.bulk import among, among_keys, insert_rows
from emailer.adapters.persistence.engine import single_statements
from emailer.adapters.persistence.reconnect import with_reconnect
from emailer.adapters.persistence.tables import outbox
from emailer.retries import OUTBOX_CLAIM_LEASE
from handlers.ports import Clock, OutgoingMessage, Publisher

log = structlog.get_logger(__name__)

SWEEP_LIMIT = 500


def write(conn: Connection, messages: Sequence[OutgoingMessage], now: datetime) -> None:
    """Insert ``messages`` as pending rows, inside the caller's transaction."""
    insert_rows(conn, outbox, [_row(m, now) for m in messages])


def _row(message: OutgoingMessage, now: datetime) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "message_type": message.message_type,
        "intent": message.intent,
        "destination": message.destination,
        "headers": dict(message.headers),
        "body": message.body.decode(),
        "created_at": now,
    }


def _message(row: RowMapping) -> OutgoingMessage:
    headers: dict[str, str] = dict(row["headers"])
    return OutgoingMessage(
        message_id=row["message_id"],
        message_type=row["message_type"],
        body=row["body"].encode(),
        headers=headers,
        intent=row["intent"],
        destination=row["destination"],
        content_type=headers.get(H.CONTENT_TYPE) or "application/json",
    )


@dataclass(frozen=True)
class Claim:
    """Pending rows one sweeper owns until ``until`` (the value it wrote in ``claimed_until``)."""

    messages: list[OutgoingMessage]
    until: datetime

    @property
    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages]


class Outbox:
    """The relay and the sweep over the ``outbox`` table, publishing through ``publisher``."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        clock: Clock,
        lease: timedelta = OUTBOX_CLAIM_LEASE,
    ) -> None:
        self.engine = engine
        self._single = single_statements(engine)
        """For ``mark_sent``'s one UPDATE: on PostgreSQL one round trip, where BEGIN, the UPDATE and
        COMMIT were three on the relay's thread (each a wait for the interpreter lock, behind the
        consumer, when it comes back)."""
        self.publisher = publisher
        self.clock = clock
        self.lease = lease
        self._held: set[str] = set()
        self._held_lock = threading.Lock()

    # ------------------------------------- rows a relay of this process holds

    def hold(self, message_ids: Sequence[str]) -> None:
        """These committed rows are in a relay's hands (``background_relay.py``): this process's sweep
        leaves them alone, so that a relay running behind does not make it publish them a second time."""
        with self._held_lock:
            self._held.update(message_ids)

    def release(self, message_ids: Sequence[str]) -> None:
        with self._held_lock:
            self._held.difference_update(message_ids)

    def _not_held(self, rows: Sequence[RowMapping]) -> list[RowMapping]:
        with self._held_lock:
            return [r for r in rows if r["message_id"] not in self._held] if self._held else list(rows)

    # ------------------------------------------------------------- the relay

    def publish_committed(self, messages: Sequence[OutgoingMessage]) -> bool:
        """Publish right after the commit; True if all were confirmed and marked sent."""
        if not messages:
            return True
        return self.publish_only(messages) and self.mark_sent([m.message_id for m in messages])

    def publish_only(self, messages: Sequence[OutgoingMessage]) -> bool:
        """Publish committed rows without marking them (``mark_sent`` does, later); True once the broker
        confirmed every one. A failed publish leaves them pending, for the sweep."""
        try:
            self.publisher.publish(messages)
        except Exception as exc:  # noqa: BLE001 - the rows stay pending: the sweep will publish them
            log.warning(
                "outbox.publish_failed_left_for_sweep", count=len(messages), error=redaction.describe(exc)
            )
            return False
        return True

    # ------------------------------------------------------------- the sweep

    def sweep(self, older_than: timedelta, limit: int = SWEEP_LIMIT) -> int:
        """Claim rows pending for longer than ``older_than``, publish them, mark them sent.

        Returns how many were published. A failed publish raises (after giving
        the claim back, so the next sweep takes the rows at once).
        """
        claim = self.claim(older_than, limit)
        if not claim.messages:
            return 0
        try:
            self.publisher.publish(claim.messages)
        except Exception:
            self._release(claim)
            raise
        self.mark_sent(claim.message_ids)
        log.info("outbox.swept", count=len(claim.messages))
        return len(claim.messages)

    def claim(self, older_than: timedelta, limit: int = SWEEP_LIMIT) -> Claim:
        """Take up to ``limit`` pending, unclaimed rows for ``lease``, in one short transaction."""
        now = self.clock.now()
        until = now + self.lease

        def claim_rows() -> list[OutgoingMessage]:
            with self.engine.begin() as conn:
                rows = (
                    conn.execute(
                        select(outbox)
                        .where(
                            outbox.c.dispatched_at.is_(None),
                            outbox.c.created_at <= now - older_than,
                            or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
                        )
                        .order_by(outbox.c.created_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                    .mappings()
                    .all()
                )
                rows = self._not_held(rows)
                if rows:
                    conn.execute(
                        update(outbox)
                        .where(among(conn, outbox.c.message_id, [r["message_id"] for r in rows]))
                        .values(claimed_until=until)
                    )
            return [_message(r) for r in rows]

        # Lost before the commit: nothing was claimed. Lost in it: the rows wait out the lease.
        return Claim(with_reconnect(claim_rows), until)

    def _release(self, claim: Claim) -> None:
        """Give a claim back early (only if it is still ours); best effort, the lease ends anyway."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(outbox)
                    .where(
                        among(conn, outbox.c.message_id, claim.message_ids),
                        outbox.c.dispatched_at.is_(None),
                        outbox.c.claimed_until == claim.until,
                    )
                    .values(claimed_until=None)
                )
        except Exception as exc:  # noqa: BLE001 - the rows come back when the lease ends
            log.warning("outbox.release_failed", count=len(claim.messages), error=redaction.describe(exc))

    def mark_sent(self, message_ids: list[str]) -> bool:
        """Mark confirmed rows sent; if even the retries fail, the sweep publishes them again."""
        now = self.clock.now()

        def mark() -> None:
            with self._single.begin() as conn:  # one statement: atomic on its own
                conn.execute(_mark_statement(conn), {"ids": message_ids, "now": now})

        try:
            with_reconnect(mark)
        except Exception as exc:  # noqa: BLE001 - published already; a second publish is deduped
            log.warning("outbox.mark_sent_failed", count=len(message_ids), error=redaction.describe(exc))
            return False
        return True

    # ---------------------------------------------------------- housekeeping

    def purge(self, sent_before: datetime) -> int:
        """Delete rows sent before ``sent_before``; pending rows are never purged."""
        with self.engine.begin() as conn:
            sent = outbox.c.dispatched_at
            result = conn.execute(delete(outbox).where(sent.is_not(None), sent < sent_before))
        return int(result.rowcount)

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.dispatched_at.is_(None))
                ).scalar_one()
            )


_MARKS: dict[str, Update] = {}


def _mark_statement(conn: Connection) -> Update:
    """``mark_sent``'s UPDATE for ``conn``'s dialect, made once (its keys the parameter ``ids``): built
    per call, each cost its construction and its cache key."""
    statement = _MARKS.get(conn.dialect.name)
    if statement is None:
        statement = _MARKS[conn.dialect.name] = (
            update(outbox)
            .where(among_keys(conn, outbox.c.message_id, "ids"), outbox.c.dispatched_at.is_(None))
            .values(dispatched_at=bindparam("now", type_=outbox.c.dispatched_at.type), claimed_until=None)
        )
    return statement
