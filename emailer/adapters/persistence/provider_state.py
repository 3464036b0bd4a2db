"""The providers' shared state on SQL: one ``provider_state`` row per provider, read and changed atomically.

Every method is one short transaction of its own: the row is locked (``FOR
UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), the
gate's pure decision is applied (``emailer.adapters.providers.gate``), and the
row written back if it changed. So two workers never both take the last slot of
the drain rate, nor both become the probe of a configuration error. An admission
whose decision would change nothing (no drain rate, no pause, no probe: the usual
case) is answered from a plain read, without a lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError

from emailer.adapters.persistence.engine import single_statements
from emailer.adapters.persistence.tables import provider_state
from emailer.adapters.providers.gate import (
    Admission,
    DrainRate,
    ProviderState,
    ProviderStateChanges,
    decide,
)

T = TypeVar("T")
_FIELDS = ("paused_until", "reason", "detail", "paused_at", "rate_tat")


class SqlProviderState(ProviderStateChanges):
    def __init__(self, engine: Engine, now: Callable[[], datetime]) -> None:
        """``now`` stamps ``updated_at``."""
        self.engine = engine
        self._reads = single_statements(engine)
        """For a plain read: one statement, no transaction on PostgreSQL (no BEGIN, no ROLLBACK: one
        round trip, not three)."""
        self._now = now

    # ------------------------------------------------------------------ port

    def admit(
        self, provider: str, now: datetime, rate: DrainRate, probe_wait: timedelta, count: int = 1
    ) -> Admission:
        def step(state: ProviderState) -> tuple[Admission, ProviderState]:
            return decide(state, now, rate, probe_wait, count)

        seen = self.read(provider)
        admission, changed = step(seen)
        if changed == seen:  # nothing to write (no drain rate, no probe): no lock, no write
            return admission
        return self._change(provider, step)

    def read(self, provider: str) -> ProviderState:
        with self._reads.connect() as conn:
            query = select(provider_state).where(provider_state.c.provider == provider)
            row = conn.execute(query).mappings().first()
        return _state(provider, row)

    def read_all(self) -> list[ProviderState]:
        """Every provider's row (for ``/readyz``)."""
        with self._reads.connect() as conn:
            rows = conn.execute(select(provider_state).order_by(provider_state.c.provider)).mappings().all()
        return [_state(r["provider"], r) for r in rows]

    # --------------------------------------------------------------- plumbing

    def _change(self, provider: str, step: Callable[[ProviderState], tuple[T, ProviderState]]) -> T:
        with self.engine.begin() as conn:
            state = self._locked(conn, provider)
            result, changed = step(state)
            if changed != state:
                values = {f: getattr(changed, f) for f in _FIELDS}
                conn.execute(
                    update(provider_state)
                    .where(provider_state.c.provider == provider)
                    .values(**values, updated_at=self._now())
                )
        return result

    def _locked(self, conn: Connection, provider: str) -> ProviderState:
        query = select(provider_state).where(provider_state.c.provider == provider).with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(provider_state).values(provider=provider, updated_at=self._now()))
            except IntegrityError:
                pass  # another worker created it first
            row = conn.execute(query).mappings().first()
        return _state(provider, row)


def _state(provider: str, row: RowMapping | None) -> ProviderState:
    if row is None:
        return ProviderState(provider)
    return ProviderState(provider, **{f: row[f] for f in _FIELDS})
