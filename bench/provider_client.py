#!/usr/bin/env python3
"""The SendGrid provider alone: ``SendGridProvider.send`` against a sandbox child process, C threads.

What the provider's HTTP client costs per email, without the rest of the path
(no broker, no database, no gate): N ~1 KB emails (the benchmark's) sent by C
threads through one provider, as a worker's dispatch threads do, to an
``emailer sandbox`` child process. Printed: sends/s, p50/p99 of one send (of a slice with ``--gate``), the
CPU of this process per send (the client's cost) and of the sandbox, and the
TCP connections the sandbox accepted (from the kernel's table of this
process's sockets to the sandbox port: a new connection per email shows as N).
Every outcome must be ACCEPTED.

With ``--gate`` the provider is called as a worker calls it: behind its circuit
breaker and the provider gate (an in-memory shared state, no drain rate), with
as many kept connections as calls in flight, one thread preparing a slice of
``--concurrency`` emails and handing it to the gate (``send_many``), as the
worker's claim and dispatch-send thread do, so the gate's own hand-offs and the
request's build at the claim are in the figure.

Options: --n (2000), --concurrency (8), --gate.
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


def gated(provider: Any, concurrency: int) -> Any:
    """``provider`` as the worker holds it: breaker inside the gate, state in memory (no drain rate)."""
    import threading as _threading
    from collections.abc import Callable
    from typing import TypeVar

    from emailer.adapters.clock import SystemClock
    from emailer.adapters.providers.circuit_breaker import CircuitBreaker
    from emailer.adapters.providers.gate import ProviderGate, ProviderState, ProviderStateChanges

    T = TypeVar("T")

    class MemoryState(ProviderStateChanges):
        def __init__(self) -> None:
            self.states: dict[str, ProviderState] = {}
            self._lock = _threading.Lock()

        def _change(self, name: str, step: Callable[[ProviderState], tuple[T, ProviderState]]) -> T:
            with self._lock:
                result, self.states[name] = step(self.read(name))
            return result

        def read(self, name: str) -> ProviderState:
            return self.states.get(name) or ProviderState(name)

        def read_all(self) -> list[ProviderState]:
            return list(self.states.values())

    clock = SystemClock()
    return ProviderGate(CircuitBreaker(provider, clock), MemoryState(), clock, concurrency=concurrency)


def run(python: str, n: int, concurrency: int, gate: bool = False) -> dict[str, Any]:
    from emailer.adapters.providers.sendgrid import DEFAULT_POOL_SIZE, SendGridProvider
    from handlers.ports import Outcome

    api_key = f"SG.{secrets.token_urlsafe(24)}"
    emails = [outgoing(i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="provider-client-") as workdir:
        sandbox = Sandbox(python, Path(workdir), {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
        port = int(sandbox.url.rsplit(":", 1)[1])
        try:
            pool_size = concurrency if gate else DEFAULT_POOL_SIZE
            provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, pool_size=pool_size)
            latencies: list[float] = []
            failed: list[str] = []
            lock = threading.Lock()
            if gate:
                guarded = gated(provider, concurrency)

                def send_slices(share: list[Any]) -> None:
                    for start in range(0, len(share), concurrency):
                        t0 = time.monotonic()
                        for email in share[start : start + concurrency]:
                            guarded.prepare(email)  # as the worker's claim does, before the calls
                        outcomes = guarded.send_many(share[start : start + concurrency])
                        latencies.append(time.monotonic() - t0)
                        failed.extend(str(o.reason) for o in outcomes if o.outcome is not Outcome.ACCEPTED)

                workers = [threading.Thread(target=send_slices, args=(emails,))]

            def send(share: list[Any]) -> None:
                for email in share:
                    t0 = time.monotonic()
                    outcome = provider.send(email)
                    with lock:
                        latencies.append(time.monotonic() - t0)
                        if outcome.outcome is not Outcome.ACCEPTED:
                            failed.append(str(outcome.reason))

            before = connections_to(port)
            threads = workers if gate else [
                threading.Thread(target=send, args=(emails[i::concurrency],)) for i in range(concurrency)
            ]  # fmt: skip
            cpu0, own0, t0 = process_cpu_seconds(sandbox.proc.pid), time.process_time(), time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed, cpu1 = time.monotonic() - t0, process_cpu_seconds(sandbox.proc.pid)
            own = time.process_time() - own0
            opened = len(connections_to(port) - before)
            if gate:
                guarded.close()
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
    ap.add_argument("--gate", action="store_true", help="through the breaker and the gate, in slices")
    args = ap.parse_args()
    r = run(sys.executable, args.n, args.concurrency, args.gate)
    c = r["concurrency"]
    what = f"gate slices of {c}" if args.gate else f"provider alone: {c} threads"
    print(
        f"{what}: {r['sends_per_s']:.1f} sends/s, "
        f"{'a slice' if args.gate else 'a send'} p50 {r['lat_p50_ms']:.1f} ms p99 {r['lat_p99_ms']:.1f} ms, "
        f"CPU a send: client "
        f"{r['client_cpu_us_per_send']} us, sandbox {r['sandbox_cpu_us_per_send']} us; "
        f"{r['connections']} TCP connection(s) for {r['n']} sends"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
