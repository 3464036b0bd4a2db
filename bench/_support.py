"""Plumbing for bench/throughput.py: a throw-away database, the sandbox process, small statistics.

Nothing here measures anything; it sets up and tears down what the benchmark
runs against, with bounded waits and errors that say what went wrong.
"""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

SHARED_BENCH = Path(os.environ.get("BENCH_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared/bench"))
"""../shared/bench: the baseline (raw_pipeline.py) and its helpers (common.py)."""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# ----------------------------------------------------------------- PostgreSQL


def _admin_dsn(server_url: str) -> str:
    url = make_url(server_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; returns its SQLAlchemy URL."""
    try:
        with psycopg.connect(_admin_dsn(server_url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {make_url(server_url)!r} is not reachable: {exc}") from exc
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(_admin_dsn(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq_url(server_url: str, database: str) -> str:
    """``server_url`` pointing at ``database``, without a SQLAlchemy driver name (for libpq)."""
    url = make_url(server_url).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


# -------------------------------------------------------------------- sandbox

_LISTENING = re.compile(r"sandbox listening on (\S+)")


class Sandbox:
    """``emailer sandbox --port 0`` as a child process; its output goes to a log file."""

    def __init__(self, python: str, workdir: Path, env: dict[str, str], timeout: float = 30.0) -> None:
        self.log_path = workdir / "sandbox.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [python, "-m", "emailer.entrypoints.cli", "sandbox", "--port", "0"],
            env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log_path.read_text())
            if found and _healthy(found.group(1)):
                return found.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"the sandbox did not come up within {timeout}s; its output:\n{self.output()}")

    def output(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], group: bool = False) -> None:
    """Terminate ``proc`` (its whole process group if ``group``), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------ measuring


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile, as in ../shared/bench/common.py."""
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of ``pid`` so far (Linux /proc), or None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> float:
    """The machine's 1-minute load average (runnable + uninterruptible tasks; 2 cores here)."""
    return round(os.getloadavg()[0], 2)


def shared_cpu_meter() -> Any | None:
    """A started-later ``CpuMeter`` from ../shared/bench/common.py (CPU by process group), or None."""
    try:
        if str(SHARED_BENCH) not in sys.path:
            sys.path.append(str(SHARED_BENCH))
        import common  # type: ignore[import-not-found]  # the baselines' helpers, optional

        return common.CpuMeter()
    except Exception:  # noqa: BLE001 - optional: no group figures then
        return None


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """p50 / p99 / max of latencies in seconds, as milliseconds (nearest rank)."""
    ordered = sorted(latencies)
    return {
        "lat_p50_ms": round(percentile(ordered, 50) * 1e3, 3),
        "lat_p99_ms": round(percentile(ordered, 99) * 1e3, 3),
        "lat_max_ms": round(ordered[-1] * 1e3, 3) if ordered else float("nan"),
    }
