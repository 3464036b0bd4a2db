#!/usr/bin/env python3
"""The SendGrid provider alone: ``SendGridProvider.send`` against a sandbox child process, C threads.

What the provider's HTTP client costs per email, without the rest of the path
(no broker, no database, no gate): N ~1 KB emails (the benchmark's) sent by C
threads through one provider, as a worker's dispatch threads do, to an
``emailer sandbox`` child process. Printed: sends/s, p50/p99 of one send, the
CPU of this process per send (the client's cost) and of the sandbox, and the
TCP connections the sandbox accepted (from the kernel's table of this
process's sockets to the sandbox port: a new connection per email shows as N).
Every outcome must be ACCEPTED.

Options: --n (2000), --concurrency (8).
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

from _commands import make_command
from _support import BenchError, Sandbox, latency_ms, process_cpu_seconds


def outgoing(i: int) -> Any:
    from contracts import Address
    from handlers.ports import OutgoingEmail

    command = json.loads(make_command(i, "prov").body)
    return OutgoingEmail(
        email_id=command["email_id"],
        from_=Address(**command["from"]),
        to=[Address(**a) for a in command["to"]],
        cc=[Address(**a) for a in command["cc"]],
        subject=command["subject"],
        text=command["text"],
    )


def connections_to(port: int) -> set[int]:
    """Local ports of this process's TCP connections to ``port`` on loopback seen so far (ESTABLISHED
    or TIME_WAIT: a closed connection lingers there for a minute)."""
    found: set[int] = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            local, remote = line.split()[1:3]
            if int(remote.split(":")[1], 16) == port:
                found.add(int(local.split(":")[1], 16))
    return found


def run(python: str, n: int, concurrency: int) -> dict[str, Any]:
    from emailer.adapters.providers.sendgrid import SendGridProvider
    from handlers.ports import Outcome

    api_key = f"SG.{secrets.token_urlsafe(24)}"
    emails = [outgoing(i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="provider-client-") as workdir:
        sandbox = Sandbox(python, Path(workdir), {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
        port = int(sandbox.url.rsplit(":", 1)[1])
        try:
            provider = SendGridProvider(api_key=api_key, base_url=sandbox.url)
            latencies: list[float] = []
            failed: list[str] = []
            lock = threading.Lock()

            def send(share: list[Any]) -> None:
                for email in share:
                    t0 = time.monotonic()
                    outcome = provider.send(email)
                    with lock:
                        latencies.append(time.monotonic() - t0)
                        if outcome.outcome is not Outcome.ACCEPTED:
                            failed.append(str(outcome.reason))

            before = connections_to(port)
            threads = [
                threading.Thread(target=send, args=(emails[i::concurrency],)) for i in range(concurrency)
            ]
            cpu0, own0, t0 = process_cpu_seconds(sandbox.proc.pid), time.process_time(), time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed, cpu1 = time.monotonic() - t0, process_cpu_seconds(sandbox.proc.pid)
            own = time.process_time() - own0
            opened = len(connections_to(port) - before)
        finally:
            sandbox.stop()
    if failed:
        raise BenchError(f"{len(failed)} send(s) not accepted, e.g. {failed[0]}")
    return {
        "n": n,
        "concurrency": concurrency,
        "sends_per_s": round(n / elapsed, 1),
        **latency_ms(latencies),
        "client_cpu_us_per_send": round(1e6 * own / n),
        "sandbox_cpu_us_per_send": round(1e6 * (cpu1 - cpu0) / n) if cpu0 is not None and cpu1 else None,
        "connections": opened,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    r = run(sys.executable, args.n, args.concurrency)
    print(
        f"provider alone: {r['sends_per_s']:.1f} sends/s with {r['concurrency']} threads, "
        f"p50 {r['lat_p50_ms']:.1f} ms p99 {r['lat_p99_ms']:.1f} ms, CPU a send: client "
        f"{r['client_cpu_us_per_send']} us, sandbox {r['sandbox_cpu_us_per_send']} us; "
        f"{r['connections']} TCP connection(s) for {r['n']} sends"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
