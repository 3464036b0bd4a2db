"""The relay's view of the outbox: mark rows sent once the broker confirmed, find what a crash left."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select, update

from emailer.adapters.persistence.tables import inbox, outbox
from handlers.ports import OutgoingMessage


class OutboxStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def mark_dispatched(self, message_ids: Sequence[str], now: datetime) -> None:
        if not message_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.message_id.in_(list(message_ids)), outbox.c.dispatched_at.is_(None))
                .values(dispatched_at=now)
            )

    def sweep(
        self,
        publish: Callable[[list[OutgoingMessage]], None],
        now: datetime,
        older_than: timedelta,
        limit: int = 500,
    ) -> int:
        """Publish rows still pending after ``older_than``; rows stay locked while publishing.

        ``SKIP LOCKED`` (PostgreSQL) lets several workers sweep without taking the
        same rows; a row is marked sent only after ``publish`` returned (confirmed).
        """
        with self.engine.begin() as conn:
            rows = (
                conn.execute(
                    select(outbox)
                    .where(outbox.c.dispatched_at.is_(None), outbox.c.created_at <= now - older_than)
                    .order_by(outbox.c.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .all()
            )
            if not rows:
                return 0
            publish(
                [
                    OutgoingMessage(
                        message_id=r["message_id"],
                        message_type=r["message_type"],
                        body=r["body"].encode(),
                        headers=dict(r["headers"]),
                        intent=r["intent"],
                        destination=r["destination"],
                    )
                    for r in rows
                ]
            )
            conn.execute(
                update(outbox)
                .where(outbox.c.message_id.in_([r["message_id"] for r in rows]))
                .values(dispatched_at=now)
            )
        return len(rows)

    def purge(self, dispatched_before: datetime, handled_before: datetime) -> tuple[int, int]:
        """Delete outbox rows sent before ``dispatched_before`` and inbox ids older than ``handled_before``.

        Both tables would otherwise grow forever. An inbox id kept longer than any
        redelivery can take is enough; SendEmail is deduplicated by email id anyway.
        """
        with self.engine.begin() as conn:
            sent = conn.execute(
                delete(outbox).where(
                    outbox.c.dispatched_at.is_not(None), outbox.c.dispatched_at < dispatched_before
                )
            ).rowcount
            handled = conn.execute(delete(inbox).where(inbox.c.handled_at < handled_before)).rowcount
        return sent, handled

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.dispatched_at.is_(None))
                ).scalar_one()
            )
