#!/usr/bin/env python3
"""The SendGrid sandbox's own capacity: POST /v3/mail/send requests/s through a keep-alive pool.

So we know whether the sandbox is the bottleneck of the benchmark it serves. A
sandbox child process (``emailer sandbox --port 0``, as throughput.py starts it)
gets N valid ~1 KB Mail Send bodies (the same emails as throughput.py) from
one ``httpx.Client`` (keep-alive, a pool as large as the concurrency) shared by
C threads; each level of concurrency is a separate pass of N requests.
Printed per pass: requests/s, p50/p99 of one request, the sandbox's CPU (% of
one core) and the client's: when the client is near 100 %, the figure is a
lower bound of the sandbox's capacity. Every answer must be 202.

Options: --n (2000), --concurrency (1,8: a comma-separated list).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _commands import make_command, sendgrid_body
from _support import BenchError, Sandbox, latency_ms, process_cpu_seconds


def one_pass(url: str, api_key: str, n: int, concurrency: int, sandbox_pid: int) -> dict[str, Any]:
    bodies = [sendgrid_body(json.loads(make_command(i, "cap").body)) for i in range(n)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, limits=limits, timeout=30.0
    ) as client:
        client.post("/v3/mail/send", json=bodies[0])  # open one connection before the clock starts

        def run(share: list[dict[str, Any]]) -> None:
            for body in share:
                t0 = time.monotonic()
                status = client.post("/v3/mail/send", json=body).status_code
                with lock:
                    latencies.append(time.monotonic() - t0)
                    if status != 202:
                        failures.append(status)

        threads = [threading.Thread(target=run, args=(bodies[i::concurrency],)) for i in range(concurrency)]
        cpu0, own0, t0 = process_cpu_seconds(sandbox_pid), time.process_time(), time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed, cpu1 = time.monotonic() - t0, process_cpu_seconds(sandbox_pid)
        own = time.process_time() - own0
    if failures:
        raise BenchError(f"the sandbox answered {len(failures)} request(s) with {sorted(set(failures))}")
    return {
        "concurrency": concurrency,
        "n": n,
        "requests_per_s": round(n / elapsed, 1),
        **latency_ms(latencies),
        "sandbox_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1) if cpu0 is not None and cpu1 else None,
        "client_cpu_pct": round(100 * own / elapsed, 1),
    }


def measure(python: str, n: int, levels: list[int]) -> list[dict[str, Any]]:
    """Start a sandbox of its own, run one pass per concurrency level, stop it."""
    api_key = f"SG.{secrets.token_urlsafe(24)}"
    with tempfile.TemporaryDirectory(prefix="sandbox-capacity-") as workdir:
        sandbox = Sandbox(python, Path(workdir), {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
        try:
            return [one_pass(sandbox.url, api_key, n, c, sandbox.proc.pid) for c in levels]
        finally:
            sandbox.stop()


def describe(p: dict[str, Any]) -> str:
    return (
        f"{p['requests_per_s']:8.1f} requests/s with {p['concurrency']} in flight (keep-alive), "
        f"p50 {p['lat_p50_ms']:.1f} ms p99 {p['lat_p99_ms']:.1f} ms, "
        f"CPU (% of one core): sandbox {p['sandbox_cpu_pct']}, "
        f"client {p['client_cpu_pct']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,8", help="comma-separated levels (default 1,8)")
    args = ap.parse_args()
    for p in measure(sys.executable, args.n, [int(c) for c in args.concurrency.split(",")]):
        print(f"sandbox capacity: {describe(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
