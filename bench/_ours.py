"""One run of Emailer itself: K worker processes on a stack of its own, closed loop or open loop."""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _commands import Command, make_command
from _recorder import Stamps, path_figures, worker_time
from _stack import (
    AMQP_URL,
    Stack,
    checks_pass,
    emailer_settings,
    end_state,
    first_error_reason,
    preload,
    publish_command,
    queue_depth,
    quietly,
    stack,
)
from _support import BenchError, latency_ms, load_average, process_cpu_seconds, shared_cpu_meter, stop_process

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RunOptions:
    n: int
    workers: int
    prefetch: int
    batch_size: int
    keep: bool
    timeout: float
    stall_timeout: float
    settings: tuple[tuple[str, str], ...] = ()
    """Emailer settings given with ``--setting NAME=VALUE`` (over the benchmark's own), as strings."""
    subscriber: str = "queue"
    """``queue``: the events pile up on the subscriber queue, nobody takes them; ``consume``: a
    subscriber process takes them as they come (``_subscriber.py``)."""


class WorkerProcs:
    """K ``_worker_proc.py`` processes: started, told ``go`` together, told ``stop``, their stamps merged."""

    def __init__(self, python: str, settings: dict[str, Any], count: int, workdir: Path) -> None:
        settings_path = workdir / "worker-settings.json"
        settings_path.write_text(json.dumps(settings))
        self.out_paths = [workdir / f"worker-{i}.json" for i in range(count)]
        self.procs = [
            subprocess.Popen(
                [python, str(HERE / "_worker_proc.py"), str(settings_path), str(out)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE,
            )  # fmt: skip
            for out in self.out_paths
        ]
        for proc in self.procs:
            self._expect(proc, "ready", 60.0)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @staticmethod
    def _expect(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if line != word:
            raise BenchError(f"worker {proc.pid} did not say {word!r} within {timeout}s (got {line!r})")

    def _tell(self, word: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(word + "\n")
            proc.stdin.flush()

    def go(self) -> None:
        self._tell("go")

    def stop(self) -> Stamps:
        self._tell("stop")
        stamps = Stamps()
        for proc, out in zip(self.procs, self.out_paths, strict=True):
            self._expect(proc, "done", 60.0)
            proc.wait(30)
            stamps.add(json.loads(out.read_text()))
        return stamps

    def kill(self) -> None:
        for proc in self.procs:
            stop_process(proc)


class SubscriberEvents:
    """The events the subscriber side holds: on its queue (``queue``), or taken off it by a subscriber
    process that consumes it (``consume``: ``_subscriber.py``, started here and ready on return)."""

    def __init__(self, s: Stack, mode: str, python: str, cleanup: contextlib.ExitStack) -> None:
        self.stack, self.mode = s, mode
        self.count_file = s.workdir / "subscriber-count"
        if mode == "queue":
            return
        proc = subprocess.Popen(
            [python, str(HERE / "_subscriber.py"), AMQP_URL, s.sink_queue, str(self.count_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=HERE,
        )  # fmt: skip
        cleanup.callback(quietly, "stop the subscriber", stop_process, proc)
        deadline = time.monotonic() + 30.0
        while not self.count_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                error = proc.stderr.read() if proc.stderr and proc.poll() is not None else "(still starting)"
                raise BenchError(f"the subscriber did not start consuming {s.sink_queue}: {error[-500:]}")
            time.sleep(0.02)

    def count(self, channel: Any) -> int:
        if self.mode == "queue":
            return queue_depth(channel, self.stack.sink_queue)
        return int(self.count_file.read_text() or 0)


class CpuProbe:
    """CPU over the timed phase in % of one core: the worker processes, the sandbox, and by group."""

    def __init__(self, worker_pids: list[int], sandbox_pid: int) -> None:
        self.worker_pids, self.sandbox_pid = worker_pids, sandbox_pid
        self.meter = shared_cpu_meter()

    def _workers(self) -> float:
        return sum(process_cpu_seconds(p) or 0.0 for p in self.worker_pids)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.workers0, self.sandbox0 = self._workers(), process_cpu_seconds(self.sandbox_pid)
        if self.meter is not None:
            self.meter.start()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        sandbox1 = process_cpu_seconds(self.sandbox_pid)
        use: dict[str, Any] = {"worker_processes": round(100 * (self._workers() - self.workers0) / wall, 1)}
        if self.sandbox0 is not None and sandbox1 is not None:
            use["sandbox_process"] = round(100 * (sandbox1 - self.sandbox0) / wall, 1)
        if self.meter is not None:
            use["by_group"] = groups = self.meter.stop()
            ours = use["worker_processes"] + use.get("sandbox_process", 0.0)
            use["other_python"] = round(max(0.0, groups.get("python", 0.0) - ours), 1)
        return use


class LoadSampler(threading.Thread):
    """The 1-minute load average, sampled every second while it runs."""

    def __init__(self) -> None:
        super().__init__(name="load-sampler", daemon=True)
        self.samples: list[float] = [load_average()]
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            self.samples.append(load_average())

    def finish(self) -> dict[str, float]:
        self.stopping.set()
        self.join(5)
        return {"mean": round(sum(self.samples) / len(self.samples), 2), "max": max(self.samples)}


def run_ours(o: RunOptions, python: str, rate: float | None = None) -> dict[str, Any]:
    """One round of ours; closed loop (pre-loaded) or, with ``rate``, open loop."""
    from emailer.adapters.persistence.schema import upgrade
    from emailer.bootstrap import bootstrap
    from emailer.config import load_settings

    with stack(python, o.keep) as s, contextlib.ExitStack() as cleanup:
        commands = [make_command(i, s.run_id) for i in range(o.n)]
        settings = emailer_settings(s, o.prefetch, o.batch_size, secrets.token_urlsafe(32))
        settings.update(o.settings)
        app = bootstrap(load_settings(_env_file=None, **settings))  # for migrating and the checks
        cleanup.callback(quietly, "close the app", app.close)
        upgrade(app.engine)
        preload_s = preload(s.conn, s.topology.input_queue, commands) if rate is None else 0.0
        procs = WorkerProcs(python, settings, o.workers, s.workdir)
        cleanup.callback(quietly, "stop the worker processes", procs.kill)
        events = SubscriberEvents(s, o.subscriber, python, cleanup)
        cpu = CpuProbe(procs.pids, s.sandbox.proc.pid)
        cpu.start()
        procs.go()
        sending = send_at_rate(s, commands, rate) if rate is not None else None
        wait_until_done(s, o, app.engine, events)
        cpu_use = cpu.stop()
        stamps = procs.stop()
        got = stamps.received
        received = {c.email_id: got[c.message_id] for c in commands if c.message_id in got}
        result: dict[str, Any] = {
            "bench": "emailer_throughput",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "closed_loop" if rate is None else "open_loop",
            "n": o.n,
            "workers": o.workers,
            "prefetch": o.prefetch,
            "batch_size": o.batch_size,
            "settings": dict(o.settings),
            "subscriber": o.subscriber,
            "command_bytes": round(sum(len(c.body) for c in commands) / len(commands)),
            "preload_s": round(preload_s, 3),
            **path_figures(stamps, received),
            "worker_time": worker_time(stamps),
            "cpu": cpu_use,
            "check": end_state(app, s, commands, events.count),
        }
        if sending is not None:
            result["open_loop"] = open_loop_figures(stamps, received, sending)
        result["ok"] = checks_pass(result["check"], o.n)
        return result


@dataclass
class Sending:
    rate: float
    sent: dict[str, float]  # email id -> when its command was published
    achieved_rate: float
    max_lag_ms: float  # how far the sender fell behind its schedule at worst


def send_at_rate(s: Stack, commands: list[Command], rate: float) -> Sending:
    """Publish the commands on a fixed schedule (t0 + i / rate) while the workers run."""
    from kombu.messaging import Producer

    channel = s.conn.channel()
    producer = Producer(channel)
    sent: dict[str, float] = {}
    lag = 0.0
    t0 = time.monotonic()
    for i, c in enumerate(commands):
        due = t0 + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        now = time.monotonic()
        lag = max(lag, now - due)
        sent[c.email_id] = now
        publish_command(producer, s.topology.input_queue, c)
    span = max(sent.values()) - t0
    channel.close()
    return Sending(rate, sent, round((len(commands) - 1) / span, 1) if span else rate, round(lag * 1e3, 1))


def open_loop_figures(stamps: Stamps, received: dict[str, float], sending: Sending) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rate": sending.rate,
        "achieved_rate": sending.achieved_rate,
        "sender_max_lag_ms": sending.max_lag_ms,
    }
    for name, event in (("accept", "EmailQueued"), ("full", "EmailDeliveryStarted")):
        confirmed = stamps.confirmed[event]
        out[name] = {
            "from_received": latency_ms([confirmed[e] - t for e, t in received.items() if e in confirmed]),
            "from_sent": latency_ms([confirmed[e] - t for e, t in sending.sent.items() if e in confirmed]),
        }
    return out


def wait_until_done(s: Stack, o: RunOptions, engine: Any, events: SubscriberEvents) -> None:
    """Until the subscriber side holds 2N events; BenchError on an error, a failed email, a stall."""
    from sqlalchemy import func, select

    from emailer.adapters.persistence.tables import emails

    channel = s.conn.channel()
    want = 2 * o.n
    start = last_change = next_probe = time.monotonic()
    last = -1
    try:
        while (held := events.count(channel)) < want:
            now = time.monotonic()
            state = f"{held}/{want} events at the subscriber"
            if now >= next_probe:
                next_probe = now + 1.0
                if errors := queue_depth(channel, s.topology.error_queue):
                    reason = first_error_reason(channel, s.topology.error_queue)
                    raise BenchError(f"{errors} message(s) in the error queue ({state}); first: {reason}")
                with engine.connect() as conn:
                    failed = conn.execute(
                        select(func.count()).select_from(emails).where(emails.c.status == "failed")
                    ).scalar_one()
                if failed:
                    raise BenchError(f"{failed} email(s) failed ({state}): is the sandbox failing?")
            if held != last:
                last, last_change = held, now
            elif now - last_change > o.stall_timeout:
                waiting = queue_depth(channel, s.topology.input_queue)
                raise BenchError(f"no progress for {o.stall_timeout:.0f}s: {state}; {waiting} in the input")
            if now - start > o.timeout:
                raise BenchError(f"not done after {o.timeout:.0f}s: {state}")
            time.sleep(0.02)
    finally:
        channel.close()
