#!/usr/bin/env python3
"""The SendGrid sandbox's own capacity: POST /v3/mail/send requests/s over kept-alive connections.

So we know whether the sandbox is the bottleneck of the benchmark it serves. A
sandbox child process (``emailer sandbox --port 0``, as throughput.py starts it)
gets N valid ~1 KB Mail Send bodies (the same emails as throughput.py); each
level of concurrency C and each client is a separate pass of N requests:

- ``httpx``: one ``httpx.Client`` (keep-alive, a pool as large as C) shared by
  C threads, as a Python service would call it;
- ``raw``: C kept connections driven by asyncio with the requests encoded
  beforehand, a client that costs little CPU, so the sandbox is what is measured.

Printed per pass: requests/s, p50/p99 of one request, the sandbox's CPU (% of
one core, and microseconds a request: what one free core would serve) and the
client's. On a shared machine the wall-clock rate depends on what else runs;
the CPU per request does much less. Every answer must be 202.

Options: --n (2000), --concurrency (1,8: a comma-separated list), --clients
(httpx,raw).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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

CLIENTS = ("httpx", "raw")


class Meter:
    """Wall clock, the sandbox's CPU and this process's CPU over the timed part of a pass."""

    def __init__(self, sandbox_pid: int) -> None:
        self._pid = sandbox_pid
        self.elapsed = self.sandbox_cpu = self.own_cpu = 0.0

    def start(self) -> None:
        self._t0, self._own0 = time.monotonic(), time.process_time()
        self._cpu0 = process_cpu_seconds(self._pid) or 0.0

    def stop(self) -> None:
        self.elapsed = time.monotonic() - self._t0
        self.own_cpu = time.process_time() - self._own0
        self.sandbox_cpu = (process_cpu_seconds(self._pid) or 0.0) - self._cpu0


def bodies(n: int) -> list[dict[str, Any]]:
    return [sendgrid_body(json.loads(make_command(i, "cap").body)) for i in range(n)]


def httpx_pass(
    url: str, api_key: str, n: int, concurrency: int, meter: Meter
) -> tuple[list[float], list[int]]:
    """N requests from C threads sharing one keep-alive client: (seconds, latencies, non-202 statuses)."""
    mails = bodies(n)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, limits=limits, timeout=30.0
    ) as client:
        client.post("/v3/mail/send", json=mails[0])  # open one connection before the clock starts

        def run(share: list[dict[str, Any]]) -> None:
            for body in share:
                t0 = time.monotonic()
                status = client.post("/v3/mail/send", json=body).status_code
                with lock:
                    latencies.append(time.monotonic() - t0)
                    if status != 202:
                        failures.append(status)

        threads = [threading.Thread(target=run, args=(mails[i::concurrency],)) for i in range(concurrency)]
        meter.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        meter.stop()
        return latencies, failures


def raw_pass(url: str, api_key: str, n: int, concurrency: int, meter: Meter) -> tuple[list[float], list[int]]:
    """N requests over C kept connections, encoded beforehand, read with asyncio."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = f"POST /v3/mail/send HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
    requests = []
    for mail in bodies(n):
        body = json.dumps(mail).encode()
        requests.append(
            f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
    latencies: list[float] = []
    failures: list[int] = []

    async def connection(share: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for request in share:
                t0 = time.monotonic()
                writer.write(request)
                answer = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", answer)
                if length and int(length.group(1)):
                    await reader.readexactly(int(length.group(1)))
                latencies.append(time.monotonic() - t0)
                if answer[9:12] != b"202":
                    failures.append(int(answer[9:12]))
        finally:
            writer.close()

    async def run() -> None:
        meter.start()
        await asyncio.gather(*(connection(requests[i::concurrency]) for i in range(concurrency)))
        meter.stop()

    asyncio.run(run())
    return latencies, failures


def one_pass(
    url: str, api_key: str, n: int, concurrency: int, sandbox_pid: int, client: str
) -> dict[str, Any]:
    drive = raw_pass if client == "raw" else httpx_pass
    meter = Meter(sandbox_pid)
    latencies, failures = drive(url, api_key, n, concurrency, meter)
    if failures:
        raise BenchError(f"the sandbox answered {len(failures)} request(s) with {sorted(set(failures))}")
    return {
        "client": client,
        "concurrency": concurrency,
        "n": n,
        "requests_per_s": round(n / meter.elapsed, 1),
        **latency_ms(latencies),
        "sandbox_cpu_pct": round(100 * meter.sandbox_cpu / meter.elapsed, 1),
        "sandbox_cpu_us_per_request": round(1e6 * meter.sandbox_cpu / n, 1),
        "client_cpu_pct": round(100 * meter.own_cpu / meter.elapsed, 1),
    }


def measure(
    python: str, n: int, levels: list[int], clients: tuple[str, ...] = CLIENTS
) -> list[dict[str, Any]]:
    """Start a sandbox of its own, run one pass per client and concurrency level, stop it."""
    api_key = f"SG.{secrets.token_urlsafe(24)}"
    with tempfile.TemporaryDirectory(prefix="sandbox-capacity-") as workdir:
        sandbox = Sandbox(python, Path(workdir), {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
        try:
            return [
                one_pass(sandbox.url, api_key, n, c, sandbox.proc.pid, client)
                for client in clients
                for c in levels
            ]
        finally:
            sandbox.stop()


def describe(p: dict[str, Any]) -> str:
    per_request = p["sandbox_cpu_us_per_request"]
    per_core = f", ~{1e6 / per_request:.0f} requests/s a free core" if per_request else ""
    return (
        f"{p['requests_per_s']:8.1f} requests/s with {p['concurrency']} in flight ({p['client']} client, "
        f"keep-alive), p50 {p['lat_p50_ms']:.1f} ms p99 {p['lat_p99_ms']:.1f} ms, "
        f"CPU (% of one core): sandbox {p['sandbox_cpu_pct']} ({per_request} us a request{per_core}), "
        f"client {p['client_cpu_pct']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,8", help="comma-separated levels (default 1,8)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="httpx, raw or both (default httpx,raw)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for p in measure(sys.executable, args.n, levels, tuple(args.clients.split(","))):
        print(f"sandbox capacity: {describe(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
