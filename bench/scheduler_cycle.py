#!/usr/bin/env python3
"""The scheduler's cycle time with 1k and with 100k emails waiting (due later), on PostgreSQL.

A waiting email costs the scheduler nothing only if a pass reads the due rows
alone. This creates a database of its own (``emailer_sched_<random>``, migrated
to head, dropped afterwards), inserts emails directly as rows (status queued,
``due_at`` one day and more in the future, so none is due), ANALYZEs, and times
``emailer.endpoint.scheduler.schedule_due`` passes as the worker's scheduler
thread runs them (one unit of work per pass, the app's clock and retry policy).
Each size: 5 warm-up passes, then --passes timed ones; printed: median and p99 of
one pass in ms, and the plan PostgreSQL chose for the due query.

Options: --sizes (1000,100000), --passes (200).
Environment: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import create_database, drop_database, latency_ms, median

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def waiting_rows(start: int, stop: int, now: datetime) -> list[dict[str, Any]]:
    later = now + timedelta(days=1)
    return [
        {
            "id": f"sched-{i:07d}", "status": "queued", "subject": f"Waiting {i}",
            "content": {"text": "waiting"}, "client_metadata": {}, "due_at": later + timedelta(seconds=i),
            "attempts": 0, "created_at": now, "updated_at": now, "version": 1, "event_seq": 1,
        }  # fmt: skip
        for i in range(start, stop)
    ]


def fill(engine: Any, have: int, want: int) -> None:
    from sqlalchemy import text

    from emailer.adapters.persistence.tables import emails

    now = datetime.now(UTC)
    step = 5000
    with engine.begin() as conn:
        for lo in range(have, want, step):
            conn.execute(emails.insert(), waiting_rows(lo, min(want, lo + step), now))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE emails"))


def due_plan(engine: Any) -> str:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "EXPLAIN SELECT * FROM emails WHERE due_at <= now() ORDER BY due_at LIMIT 200 "
                "FOR UPDATE SKIP LOCKED"
            )
        ).all()
    return " / ".join(str(r[0]).strip() for r in rows if "->" in str(r[0]) or "Limit" in str(r[0]))


def time_passes(app: Any, passes: int) -> list[float]:
    from emailer.endpoint.scheduler import schedule_due

    def one() -> float:
        t0 = time.monotonic()
        queued = schedule_due(app.new_uow(), app.clock, app.policy)
        if queued:
            raise RuntimeError(f"a pass queued {queued} dispatches: nothing should be due")
        return time.monotonic() - t0

    for _ in range(5):
        one()
    return [one() for _ in range(passes)]


def measure(sizes: list[int], passes: int) -> list[dict[str, Any]]:
    from emailer.adapters.persistence.schema import upgrade
    from emailer.bootstrap import bootstrap
    from emailer.config import load_settings

    name = f"emailer_sched_{secrets.token_hex(4)}"
    url = create_database(POSTGRES_URL, name)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="sched-") as workdir:
            settings = load_settings(
                _env_file=None, var_dir=Path(workdir), database_url=url, bus_url="memory://",
                log_level="WARNING",
            )  # fmt: skip
            app = bootstrap(settings)
            try:
                upgrade(app.engine)
                have = 0
                for size in sorted(sizes):
                    t0 = time.monotonic()
                    fill(app.engine, have, size)
                    have = size
                    fill_s = time.monotonic() - t0
                    samples = time_passes(app, passes)
                    results.append(
                        {
                            "waiting": size,
                            "passes": passes,
                            "median_ms": round(median(samples) * 1e3, 3),
                            **latency_ms(samples),
                            "plan": due_plan(app.engine),
                            "fill_s": round(fill_s, 1),
                        }
                    )
            finally:
                app.close()
    finally:
        drop_database(POSTGRES_URL, name)
    return results


def describe(r: dict[str, Any]) -> str:
    return (
        f"{r['waiting']:>7} waiting: one pass median {r['median_ms']:.2f} ms, p99 {r['lat_p99_ms']:.2f} ms "
        f"({r['passes']} passes); plan: {r['plan']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--passes", type=int, default=200)
    args = ap.parse_args()
    from emailer.entrypoints.logging import configure

    configure("WARNING", "json")
    for r in measure([int(s) for s in args.sizes.split(",")], args.passes):
        print(f"scheduler cycle: {describe(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
