"""The suppression list on SQL: one row per (lower-cased) address, the first reason kept."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from emailer.adapters.persistence.bulk import among, when_present
from emailer.adapters.persistence.tables import suppressions
from emailer.domain.suppression import Suppression, SuppressionReason, normalize


class SqlSuppressions:
    """``handlers.ports.Suppressions``; writes go straight into the unit of work's transaction.

    What ``find`` or ``preload`` looked up is kept for the transaction (an
    address to its entry, or None when unlisted), so a batch of emails costs one
    round trip; ``add`` and ``remove`` forget the address, so the next ``find``
    reads it again, as the transaction now sees it.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._known: dict[str, Suppression | None] = {}

    def preload(self, addresses: Iterable[str]) -> None:
        """Look these addresses up in one round trip; ``find`` then answers them from memory."""
        wanted = {normalize(a) for a in addresses} - self._known.keys()
        if wanted and when_present(
            self.conn, suppressions.c.address, wanted, lambda listed: self._listed(wanted, listed)
        ):
            return  # with the transaction's other lookups (``bulk.deferred_lookups``)
        self._look_up(wanted)

    def _listed(self, wanted: set[str], listed: set[str]) -> None:
        """``preload``'s end inside ``lookups_together``: ``listed`` of ``wanted`` are on the list."""
        self._known.update(dict.fromkeys(wanted - listed))
        self._look_up(listed)  # their entries: one more query, only when some are listed

    def find(self, addresses: Iterable[str]) -> list[Suppression]:
        wanted = sorted({normalize(a) for a in addresses})
        self._look_up({a for a in wanted if a not in self._known})
        return [entry for a in wanted if (entry := self._known[a]) is not None]

    def _look_up(self, addresses: set[str]) -> None:
        if not addresses:
            return
        found = {
            entry.address: entry
            for entry in map(
                _suppression,
                self.conn.execute(
                    # One array parameter: an IN list was a new statement text for every batch
                    # (rendered, then parsed by psycopg), 12 ms of CPU for 100 addresses.
                    select(suppressions).where(among(self.conn, suppressions.c.address, sorted(addresses)))
                ).mappings(),
            )
        }
        self._known.update({a: found.get(a) for a in addresses})

    def add(self, suppression: Suppression) -> bool:
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(suppressions)
            .values(
                address=normalize(suppression.address),
                reason=suppression.reason.value,
                source_email_id=suppression.source_email_id,
                detail=suppression.detail,
                created_at=suppression.created_at,
            )
            .on_conflict_do_nothing(index_elements=["address"])
            .returning(suppressions.c.address)  # rowcount is not reliable here on every driver
        )
        self._known.pop(normalize(suppression.address), None)
        return self.conn.execute(statement).first() is not None

    def remove(self, address: str) -> bool:
        self._known.pop(normalize(address), None)
        result = self.conn.execute(delete(suppressions).where(suppressions.c.address == normalize(address)))
        return bool(result.rowcount)

    def page(self, limit: int = 100, after: str | None = None) -> list[Suppression]:
        query = select(suppressions).order_by(suppressions.c.address).limit(limit)
        if after is not None:
            query = query.where(suppressions.c.address > normalize(after))
        return [_suppression(r) for r in self.conn.execute(query).mappings()]


def _suppression(row: Any) -> Suppression:
    return Suppression(
        address=row["address"],
        reason=SuppressionReason(row["reason"]),
        created_at=row["created_at"],
        source_email_id=row["source_email_id"],
        detail=row["detail"],
    )
