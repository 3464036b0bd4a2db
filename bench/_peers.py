"""The programs we compare with, run as child processes in the same invocation as our own rounds.

- the hand-written baseline ``../shared/bench/raw_pipeline.py`` (accept path only),
  unchanged, through ``_isolated_baseline.py`` (queue names and a database of its own);
- the Celery full-path peer ``celery_full_path.py`` (needs the ``bench`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

from _stack import AMQP_URL, POSTGRES_URL
from _support import BenchError, drop_database, libpq_url, stop_process

HERE = Path(__file__).resolve().parent


def celery_available() -> bool:
    return importlib.util.find_spec("celery") is not None


def run_child(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float, what: str) -> str:
    """Run ``cmd`` in its own process group; its stdout. The group is ended afterwards in any case."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc, group=True)
        raise BenchError(f"{what} did not finish within {timeout:.0f}s: {' '.join(cmd)}") from None
    except BaseException:
        stop_process(proc, group=True)
        raise
    with contextlib.suppress(ProcessLookupError):  # children it may have left behind
        os.killpg(proc.pid, signal.SIGTERM)
    if proc.returncode != 0:
        raise BenchError(f"{what} exited with {proc.returncode}:\n{out[-1500:]}\n{err[-3000:]}")
    return out


def parse_json_object(out: str, required: tuple[str, ...], what: str) -> dict[str, Any]:
    """The (indented) JSON object a peer prints last on stdout."""
    try:
        data = json.loads(out[out.index("{") : out.rindex("}") + 1])
    except ValueError as exc:
        raise BenchError(f"{what} printed no JSON object: {out[-2000:]!r}") from exc
    missing = [k for k in required if k not in data]
    if missing:
        raise BenchError(f"{what}'s JSON lacks {', '.join(missing)}: {data}")
    return dict(data)


def run_baseline(path: Path, n: int, prefetch: int, workers: int, python: str) -> dict[str, Any]:
    """raw_pipeline.py (unchanged) on names of its own; its JSON object."""
    if not path.is_file():
        raise BenchError(f"no baseline at {path}: give --baseline PATH or --no-baseline")
    run_id = secrets.token_hex(4)
    db_name = f"bench_baseline_{run_id}"
    env = {
        **os.environ,
        "BENCH_AMQP_URL": AMQP_URL,
        "BENCH_SHARED_DIR": str(path.parent),
        "BENCH_BASELINE_PREFIX": f"bench-base-{run_id}",
        "BENCH_PG_DSN": libpq_url(POSTGRES_URL, db_name),  # created by the baseline itself
    }
    cmd = [python, str(HERE / "_isolated_baseline.py"), "--n", str(n), "--prefetch", str(prefetch),
           "--workers", str(workers)]  # fmt: skip
    try:
        out = run_child(cmd, env, path.parent, 900.0, "the baseline")
    finally:
        drop_database(POSTGRES_URL, db_name)
    return parse_json_object(out, ("msgs_per_s", "lat_p50_ms", "lat_p99_ms"), "the baseline")


def run_celery(n: int, concurrency: int, python: str) -> dict[str, Any]:
    """celery_full_path.py; its JSON object."""
    env = {**os.environ, "BENCH_AMQP_URL": AMQP_URL, "BENCH_POSTGRES_URL": POSTGRES_URL}
    env.pop("CELERY_FP_PREFIX", None)  # a fresh set of names for each run
    cmd = [python, str(HERE / "celery_full_path.py"), "--n", str(n), "--concurrency", str(concurrency)]
    out = run_child(cmd, env, HERE, 1200.0, "the Celery full-path peer")
    return parse_json_object(out, ("emails_per_s", "ok"), "the Celery full-path peer")
