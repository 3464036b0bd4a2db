#!/usr/bin/env python3
"""Emailer throughput: N SendEmail commands through RabbitMQ + PostgreSQL + the SendGrid sandbox.

What it does
  1. Creates a throw-away PostgreSQL database (``emailer_bench_<random>``, migrated
     to head), unique RabbitMQ names (``bench-<random>.emailer``, ``.events``,
     ``.error``, and a subscriber queue ``.sink`` bound to every event so events
     are really stored, as in the baseline) and starts ``emailer sandbox`` as a
     child process with a random ``SG.`` API key.
  2. Pre-loads N persistent ~1 KB SendEmail commands (1 to + 1 cc, subject, text,
     metadata, no attachment) with NServiceBus headers into the input queue
     (not timed) and waits until the queue holds N.
  3. Runs ONE worker in this process (``Worker(bootstrap(settings))``), with
     timestamps taken on Emailer's own objects: ``app.pipeline.handle_batch``
     (a command is received), ``app.bus.publish`` (returns once the broker
     confirmed every message; the outbox relay, ``app.outbox``, calls it on
     this instance) and ``app.provider.send`` (time in the provider call).
  4. Waits (bounded) until every email's ``EmailQueued`` and
     ``EmailDeliveryStarted`` were confirmed, stops the worker and checks the
     end state: N emails in the database, N requests accepted by the sandbox,
     no pending outbox row, 2N events on the subscriber queue, nothing in the
     error queue.
  5. Removes its queues, exchange, database (unless --keep) and processes, then
     runs ../shared/bench/raw_pipeline.py with the same N and prefetch and prints
     ``ours / baseline``.

Figures
  accept path  command received (handle_batch entry) -> its EmailQueued confirmed
  full path    command received -> its EmailDeliveryStarted confirmed
  emails/s = N / (last confirmation - first command received); p50/p99 nearest rank.
  The baseline's latency is per message (callback entry -> ack); ours covers the
  whole batch the command was handled in, so the p50 ratio is not like for like.

Options: --n (2000), --prefetch (50), --batch-size (50), --baseline PATH,
--no-baseline, --json PATH (append one JSON line), --keep (keep the database),
--timeout (600 s for the timed phase), --stall-timeout (60 s without progress).
Environment: BENCH_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672//, also
given to the baseline), BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432;
the baseline gets its database "bench" there unless BENCH_PG_DSN is set). EMAILER_*
variables are ignored: the benchmark configures Emailer itself.

Example: .venv/bin/python bench/throughput.py --n 2000 --json bench/results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _support import (
    BenchError,
    Sandbox,
    create_database,
    drop_database,
    libpq_url,
    percentile,
    process_cpu_seconds,
    stop_process,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = REPO.parent / "shared" / "bench" / "raw_pipeline.py"
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
COMMAND_BYTES = 1024
EVENT_TYPES = ("EmailQueued", "EmailDeliveryStarted", "EmailDeliveryFailed")


def venv_python() -> str:
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="SendEmail commands (default 2000)")
    ap.add_argument("--prefetch", type=int, default=50, help="worker prefetch (default 50)")
    ap.add_argument("--batch-size", type=int, default=50, help="messages per transaction (default 50)")
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="raw_pipeline.py to compare with")
    ap.add_argument("--no-baseline", action="store_true", help="do not run the baseline")
    ap.add_argument("--json", default=None, metavar="PATH", help="append the result as one JSON line")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for the timed phase")
    ap.add_argument("--stall-timeout", type=float, default=60.0, help="seconds without progress")
    args = ap.parse_args(argv)
    if args.n < 1 or args.prefetch < 1 or args.batch_size < 1:
        ap.error("--n, --prefetch and --batch-size must be at least 1")
    if not args.no_baseline and not args.baseline.is_file():
        ap.error(f"no baseline at {args.baseline}: give --baseline PATH or --no-baseline")
    return args


# ------------------------------------------------------------------ the commands


@dataclass(frozen=True)
class Command:
    message_id: str
    email_id: str
    body: bytes


def make_command(i: int, run_id: str) -> Command:
    """A realistic SendEmail of about COMMAND_BYTES bytes of JSON."""
    order = 100000 + i
    body: dict[str, Any] = {
        "email_id": f"bench-{run_id}-{i:06d}",
        "from": {"email": "orders@shop.example.com", "name": "Example Shop"},
        "to": [{"email": f"customer{i}@example.com", "name": f"Customer {i}"}],
        "cc": [{"email": f"account-manager{i % 97}@example.org"}],
        "subject": f"Your order #{order} has shipped",
        "text": "",
        "metadata": {"order_id": str(order), "customer_id": f"cust-{i}", "tenant": "bench"},
    }
    filler = (
        f"Hello Customer {i},\n\nGood news: your order #{order} is on its way. "
        "You can follow the parcel from your account page at any time. "
    )
    need = max(0, COMMAND_BYTES - len(json.dumps(body, separators=(",", ":"))))
    body["text"] = (filler * (need // len(filler) + 1))[:need]
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return Command(str(uuid.uuid4()), body["email_id"], encoded)


def preload(conn: Any, queue: str, commands: list[Command], timeout: float = 120.0) -> float:
    """Publish the commands as another service would (persistent, NServiceBus headers); wait for N."""
    from kombu.messaging import Producer

    t0 = time.perf_counter()
    channel = conn.channel()
    producer = Producer(channel)
    for c in commands:
        producer.publish(
            c.body, exchange="", routing_key=queue, delivery_mode=2, retry=False,
            content_type="application/json", content_encoding="utf-8", message_id=c.message_id,
            headers={"NServiceBus.MessageId": c.message_id, "NServiceBus.EnclosedMessageTypes": "SendEmail"},
        )  # fmt: skip
    wait_depth(channel, queue, len(commands), timeout, f"pre-loading {len(commands)} commands")
    channel.close()
    return time.perf_counter() - t0


def queue_depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


def wait_depth(channel: Any, queue: str, n: int, timeout: float, what: str) -> int:
    deadline = time.monotonic() + timeout
    while (depth := queue_depth(channel, queue)) < n:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: queue {queue} holds {depth} messages, not {n}, after {timeout}s")
        time.sleep(0.05)
    return depth


# ------------------------------------------------------------------ the recorder


class Recorder:
    """Timestamps taken inside the worker, on Emailer's own objects (no library is patched).

    The wrappers only append; ``drain`` (called from the main thread) decodes the
    published messages into ``confirmed[event type][email id] = time``.
    """

    def __init__(self) -> None:
        self.received: dict[str, float] = {}  # incoming message id -> first handle_batch entry
        self.published: list[tuple[float, list[Any]]] = []  # (confirmed at, messages)
        self.confirmed: dict[str, dict[str, float]] = {t: {} for t in EVENT_TYPES}
        self.busy: dict[str, list[float]] = {}  # seam -> [seconds, calls, items]
        self._lock = threading.Lock()
        self._drained = 0

    def instrument(self, app: Any) -> None:
        """Replace the three seams on the instances; call before ``Worker(app).start()``."""
        perf = time.perf_counter
        handle_batch, publish, send = app.pipeline.handle_batch, app.bus.publish, app.provider.send

        def timed_handle_batch(deliveries: Sequence[Any]) -> None:
            t0 = perf()
            for d in deliveries:
                self.received.setdefault(d.message_id, t0)
            try:
                handle_batch(deliveries)
            finally:
                self._add("handle_batch", perf() - t0, len(deliveries))

        def timed_publish(messages: Sequence[Any]) -> None:
            t0 = perf()
            publish(messages)  # returns once the broker confirmed every message
            t1 = perf()
            self.published.append((t1, list(messages)))
            # accept: a SendEmail batch's outbox (EmailQueued + DispatchEmail); dispatch: the rest
            # (EmailDeliveryStarted; scheduler and sweep publishes too, none in a healthy run).
            step = "accept" if any(m.message_type == "EmailQueued" for m in messages) else "dispatch"
            self._add(f"bus.publish[{step}]", t1 - t0, len(messages))

        def timed_send(request: Any) -> Any:
            t0 = perf()
            try:
                return send(request)
            finally:
                self._add("provider.send", perf() - t0, 1)

        app.pipeline.handle_batch = timed_handle_batch  # the worker reads it when it starts consuming
        app.bus.publish = timed_publish  # the outbox (app.outbox) calls publish on this instance
        app.provider.send = timed_send  # the DispatchEmail route calls provider.send on this instance

    def _add(self, seam: str, seconds: float, items: int) -> None:
        with self._lock:
            total = self.busy.setdefault(seam, [0.0, 0, 0])
            total[0] += seconds
            total[1] += 1
            total[2] += items

    def drain(self) -> None:
        end = len(self.published)
        for confirmed_at, messages in self.published[self._drained : end]:
            for message in messages:
                if message.message_type in EVENT_TYPES:
                    email_id = json.loads(message.body)["email_id"]
                    self.confirmed[message.message_type].setdefault(email_id, confirmed_at)
        self._drained = end

    def counts(self) -> tuple[int, int, int]:
        self.drain()
        return tuple(len(self.confirmed[t]) for t in EVENT_TYPES)  # type: ignore[return-value]


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """What one run owns: names, a work directory, a database, the sandbox, a broker connection."""

    run_id: str
    topology: Any  # emailer.adapters.bus.Topology
    sink_queue: str
    workdir: Path
    db_name: str
    database_url: str
    api_key: str
    sandbox: Sandbox
    conn: Any  # kombu Connection (main thread only)


@contextlib.contextmanager
def stack(python: str, keep_db: bool) -> Any:
    """Set everything up; on leaving, tear it all down again (each step on its own)."""
    from kombu.connection import Connection

    from emailer.adapters.bus import Topology

    run_id = secrets.token_hex(4)
    prefix = f"bench-{run_id}"
    topology = Topology(f"{prefix}.emailer", f"{prefix}.events", f"{prefix}.error")
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix=f"emailer-{prefix}-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        db_name = f"emailer_bench_{run_id}"
        database_url = create_database(POSTGRES_URL, db_name)
        if keep_db:
            cleanup.callback(print, f"kept the database: {database_url}", file=sys.stderr)
        else:
            cleanup.callback(quietly, f"drop database {db_name}", drop_database, POSTGRES_URL, db_name)
        api_key = f"SG.{secrets.token_urlsafe(24)}"
        sandbox = Sandbox(python, workdir, {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
        cleanup.callback(quietly, "stop the sandbox", sandbox.stop)
        conn = Connection(AMQP_URL, connect_timeout=10)
        cleanup.callback(quietly, "close the broker connection", conn.release)
        try:
            conn.ensure_connection(max_retries=2)
        except Exception as exc:
            raise BenchError(f"RabbitMQ at {conn.as_uri()} is not reachable: {exc}") from exc
        sink_queue = f"{prefix}.sink"
        cleanup.callback(quietly, "delete the queues", delete_topology, topology, sink_queue)
        channel = conn.channel()
        topology.declare(channel)
        topology.subscriber_queue(sink_queue, ["#"])(channel).declare()
        channel.close()
        yield Stack(run_id, topology, sink_queue, workdir, db_name, database_url, api_key, sandbox, conn)


def delete_topology(topology: Any, sink_queue: str) -> None:
    from kombu.connection import Connection

    with Connection(AMQP_URL, connect_timeout=10) as conn:
        channel = conn.channel()
        for queue in (topology.input_queue, topology.error_queue, sink_queue):
            channel.queue_delete(queue)
        channel.exchange_delete(topology.events_exchange)


def quietly(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run a cleanup step; a failure is reported and does not stop the other steps."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - cleanup goes on
        print(f"cleanup: could not {what}: {type(exc).__name__}: {exc}", file=sys.stderr)


def emailer_settings(s: Stack, args: argparse.Namespace) -> Any:
    from emailer.config import load_settings

    return load_settings(
        _env_file=None,
        var_dir=s.workdir / "var",
        bus_url=AMQP_URL,
        internal_key=secrets.token_urlsafe(32),
        database_url=s.database_url,
        input_queue=s.topology.input_queue,
        events_exchange=s.topology.events_exchange,
        error_queue=s.topology.error_queue,
        prefetch=args.prefetch,
        batch_size=args.batch_size,
        provider="sendgrid",
        sendgrid_api_key=s.api_key,
        sendgrid_base_url=s.sandbox.url,
        log_level="WARNING",
        log_format="json",
    )


# ------------------------------------------------------------------ the run


def run_ours(args: argparse.Namespace, python: str) -> dict[str, Any]:
    from emailer.adapters.persistence.schema import upgrade
    from emailer.bootstrap import bootstrap
    from emailer.entrypoints.worker import Worker

    with stack(python, args.keep) as s, contextlib.ExitStack() as cleanup:
        commands = [make_command(i, s.run_id) for i in range(args.n)]
        app = bootstrap(emailer_settings(s, args))
        cleanup.callback(quietly, "close the app", app.close)
        upgrade(app.engine)
        preload_s = preload(s.conn, s.topology.input_queue, commands)

        recorder = Recorder()
        recorder.instrument(app)
        cpu = CpuProbe(s.sandbox.proc.pid, args.baseline.parent)
        worker = Worker(app)
        cpu.start()
        worker.start()
        cleanup.callback(quietly, "stop the worker", worker.stop)
        wait_until_done(recorder, args.n, s, args.timeout, args.stall_timeout)
        cpu_use = cpu.stop()
        worker.stop()

        result = {
            "bench": "emailer_throughput",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "n": args.n,
            "workers": 1,
            "prefetch": args.prefetch,
            "batch_size": args.batch_size,
            "command_bytes": round(sum(len(c.body) for c in commands) / len(commands)),
            "preload_s": round(preload_s, 3),
            **path_figures(recorder, commands),
            "worker_time": worker_time(recorder),
            "cpu": cpu_use,
            "check": end_state(app, s, commands),
        }
        result["ok"] = checks_pass(result["check"], args.n)
        return result


def wait_until_done(rec: Recorder, n: int, s: Stack, timeout: float, stall_timeout: float) -> None:
    """Until every email's EmailQueued and EmailDeliveryStarted were confirmed; BenchError otherwise."""
    channel = s.conn.channel()
    start = last_change = next_probe = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    while True:
        queued, started, failed = rec.counts()
        if queued >= n and started >= n:
            channel.close()
            return
        now = time.monotonic()
        state = f"EmailQueued {queued}/{n}, EmailDeliveryStarted {started}/{n}"
        if failed:
            raise BenchError(f"{failed} email(s) got EmailDeliveryFailed ({state}): is the sandbox failing?")
        if now >= next_probe:
            next_probe = now + 1.0
            if errors := queue_depth(channel, s.topology.error_queue):
                reason = first_error_reason(channel, s.topology.error_queue)
                raise BenchError(f"{errors} message(s) went to the error queue ({state}); first: {reason}")
        if (queued, started) != last:
            last, last_change = (queued, started), now
        elif now - last_change > stall_timeout:
            waiting = queue_depth(channel, s.topology.input_queue)
            raise BenchError(
                f"no progress for {stall_timeout:.0f}s: {state}; commands received by the worker: "
                f"{len(rec.received)}; {waiting} message(s) still in the input queue"
            )
        if now - start > timeout:
            raise BenchError(f"not done after {timeout:.0f}s: {state}")
        time.sleep(0.05)


def first_error_reason(channel: Any, queue: str) -> str:
    from kombu.entity import Queue

    message = Queue(queue, no_declare=True)(channel).get(no_ack=False)
    if message is None:
        return "(gone)"
    return str((message.headers or {}).get("NServiceBus.ExceptionInfo.Message", "(no reason header)"))


# ------------------------------------------------------------------ figures


def path_figures(rec: Recorder, commands: list[Command]) -> dict[str, Any]:
    """Throughput and latency of the accept path and the full path, from the recorder's stamps."""
    rec.drain()
    received = {c.email_id: rec.received[c.message_id] for c in commands if c.message_id in rec.received}
    first = min(received.values())
    out = {}
    for name, event in (("accept", "EmailQueued"), ("full", "EmailDeliveryStarted")):
        confirmed = rec.confirmed[event]
        latencies = sorted(confirmed[e] - received[e] for e in received if e in confirmed)
        elapsed = max(confirmed.values()) - first
        out[name] = {
            "until": f"{event} confirmed",
            "elapsed_s": round(elapsed, 3),
            "emails_per_s": round(len(latencies) / elapsed, 1),
            "lat_p50_ms": round(percentile(latencies, 50) * 1e3, 3),
            "lat_p99_ms": round(percentile(latencies, 99) * 1e3, 3),
            "lat_max_ms": round(latencies[-1] * 1e3, 3),
        }
    return out


def worker_time(rec: Recorder) -> dict[str, Any]:
    """Seconds spent in each instrumented seam (publish and provider calls happen inside batches)."""
    return {
        seam: {"s": round(seconds, 3), "calls": calls, "items": items}
        for seam, (seconds, calls, items) in sorted(rec.busy.items())
    }


class CpuProbe:
    """CPU use over the timed phase: this process (the worker), the sandbox, and by process group
    with ``CpuMeter`` from ../shared/bench/common.py when it can be imported. In % of one core."""

    def __init__(self, sandbox_pid: int, shared_dir: Path) -> None:
        self.sandbox_pid = sandbox_pid
        self.meter = None
        try:
            sys.path.append(str(shared_dir))
            import common  # type: ignore[import-not-found]  # the baselines' helpers, optional

            self.meter = common.CpuMeter()
        except Exception:  # noqa: BLE001 - optional: no group figures then
            self.meter = None

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.own0 = time.process_time()
        self.sandbox0 = process_cpu_seconds(self.sandbox_pid)
        if self.meter is not None:
            self.meter.start()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        sandbox1 = process_cpu_seconds(self.sandbox_pid)
        use: dict[str, Any] = {"worker_process": round(100 * (time.process_time() - self.own0) / wall, 1)}
        if self.sandbox0 is not None and sandbox1 is not None:
            use["sandbox_process"] = round(100 * (sandbox1 - self.sandbox0) / wall, 1)
        if self.meter is not None:
            use["by_group"] = groups = self.meter.stop()
            # Python processes that are not this run's (tests, other benchmarks): a noise warning.
            ours = use["worker_process"] + use.get("sandbox_process", 0.0)
            use["other_python"] = round(max(0.0, groups.get("python", 0.0) - ours), 1)
        return use


def end_state(app: Any, s: Stack, commands: list[Command]) -> dict[str, Any]:
    """What the run left behind: database, outbox, sandbox, subscriber queue, error queue."""
    from sqlalchemy import func, select

    from emailer.adapters.persistence.tables import emails
    from emailer.sandbox.client import SandboxClient

    ours = {c.email_id for c in commands}
    with app.engine.connect() as conn:
        rows = conn.execute(select(emails.c.status, func.count()).group_by(emails.c.status)).all()
    statuses = {str(status): int(count) for status, count in rows}
    with SandboxClient(s.sandbox.url, s.api_key) as sandbox:
        accepted = sandbox.stats()["accepted"]
        sent_ids = {m["body"].get("custom_args", {}).get("email_id") for m in sandbox.messages()}
    channel = s.conn.channel()
    with contextlib.suppress(BenchError):  # a shortfall shows in the figure itself
        wait_depth(channel, s.sink_queue, 2 * len(commands), 10.0, "events")
    check = {
        "emails_in_db": sum(statuses.values()),
        "email_statuses": statuses,
        "sandbox_accepted": accepted,
        "sandbox_distinct_emails": len(sent_ids & ours),
        "outbox_pending": app.outbox.pending_count(),
        "events_on_subscriber_queue": queue_depth(channel, s.sink_queue),
        "error_queue": queue_depth(channel, s.topology.error_queue),
    }
    channel.close()
    return check


def checks_pass(check: dict[str, Any], n: int) -> bool:
    return bool(
        check["emails_in_db"] == n
        and check["email_statuses"].get("accepted") == n
        and check["sandbox_accepted"] == n
        and check["sandbox_distinct_emails"] == n
        and check["outbox_pending"] == 0
        and check["events_on_subscriber_queue"] >= 2 * n
        and check["error_queue"] == 0
    )


# ------------------------------------------------------------------ the baseline


def run_baseline(path: Path, n: int, prefetch: int, python: str, timeout: float = 900.0) -> dict[str, Any]:
    """Run raw_pipeline.py in its own process group; its printed JSON object."""
    if not path.is_file():
        raise BenchError(f"no baseline at {path}: give --baseline PATH or --no-baseline")
    env = {**os.environ, "BENCH_AMQP_URL": AMQP_URL}
    env.setdefault("BENCH_PG_DSN", libpq_url(POSTGRES_URL, "bench"))
    cmd = [python, str(path), "--n", str(n), "--prefetch", str(prefetch)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=path.parent,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc, group=True)
        raise BenchError(f"the baseline did not finish within {timeout:.0f}s: {' '.join(cmd)}") from None
    except BaseException:
        stop_process(proc, group=True)
        raise
    with contextlib.suppress(ProcessLookupError):  # consumers it may have left behind
        os.killpg(proc.pid, signal.SIGTERM)
    if proc.returncode != 0:
        raise BenchError(f"the baseline exited with {proc.returncode}:\n{err[-3000:]}")
    return parse_baseline(out)


def parse_baseline(out: str) -> dict[str, Any]:
    """raw_pipeline.py prints one indented JSON object on stdout."""
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        try:
            data = json.loads(out[out.index("{") : out.rindex("}") + 1])
        except ValueError as exc:
            raise BenchError(f"the baseline printed no JSON object: {out[-2000:]!r}") from exc
    missing = [k for k in ("msgs_per_s", "lat_p50_ms", "lat_p99_ms") if k not in data]
    if missing:
        raise BenchError(f"the baseline's JSON lacks {', '.join(missing)}: {data}")
    return dict(data)


# ------------------------------------------------------------------ output


def print_ours(r: dict[str, Any]) -> None:
    print(
        f"Emailer throughput, {r['date']}: N={r['n']} SendEmail (~{r['command_bytes']} B), "
        f"1 worker in this process, prefetch {r['prefetch']}, batch {r['batch_size']}"
    )
    for name in ("accept", "full"):
        p = r[name]
        print(
            f"  {name + ' path:':13}{p['emails_per_s']:8.1f} emails/s  p50 {p['lat_p50_ms']:7.1f} ms  "
            f"p99 {p['lat_p99_ms']:7.1f} ms   (command received -> {p['until']}, {p['elapsed_s']:.2f} s)"
        )
    units = {"handle_batch": "msgs", "provider.send": "calls"}
    print("  worker time (publish and provider calls happen inside handle_batch):")
    for seam, t in r["worker_time"].items():
        each = 1e3 * t["s"] / max(1, t["items"])
        unit = units.get(seam, "messages")
        print(
            f"    {seam:24}{t['s']:7.2f} s {t['calls']:6} calls {t['items']:6} {unit:9} {each:6.2f} ms each"
        )
    cpu = r["cpu"]
    groups = cpu.get("by_group", {})
    print(
        f"  cpu (% of one core): worker process {cpu['worker_process']}, "
        f"sandbox {cpu.get('sandbox_process', '?')}, rabbitmq {groups.get('rabbitmq', '?')}, "
        f"postgres {groups.get('postgres', '?')}, other python {cpu.get('other_python', '?')}; "
        f"machine busy {groups.get('machine_busy_pct_of_all_cores', '?')} % of "
        f"{groups.get('cores', os.cpu_count())} cores"
    )
    c, n = r["check"], r["n"]
    print(
        f"  checks: emails in DB {c['emails_in_db']}/{n} "
        f"(accepted {c['email_statuses'].get('accepted', 0)}), "
        f"sandbox accepted {c['sandbox_accepted']}/{n} ({c['sandbox_distinct_emails']} distinct), "
        f"outbox pending {c['outbox_pending']}, events on subscriber queue "
        f"{c['events_on_subscriber_queue']}/{2 * n}, error queue {c['error_queue']}"
        f" -> {'OK' if r['ok'] else 'FAILED'}"
    )


def add_baseline(r: dict[str, Any], base: dict[str, Any]) -> None:
    r["baseline"] = {
        k: base.get(k)
        for k in ("bench", "variant", "elapsed_s", "msgs_per_s", "lat_p50_ms", "lat_p99_ms", "cpu", "ok")
    }
    r["ratio"] = {
        "accept_throughput": round(r["accept"]["emails_per_s"] / base["msgs_per_s"], 3),
        "accept_p50_latency": round(r["accept"]["lat_p50_ms"] / base["lat_p50_ms"], 3),
    }
    r["ok"] = r["ok"] and base.get("ok", True) is not False


def print_baseline(r: dict[str, Any]) -> None:
    b, ratio = r["baseline"], r["ratio"]
    print(
        f"baseline raw_pipeline ({b['variant']}): {b['msgs_per_s']:8.1f} msgs/s  "
        f"p50 {b['lat_p50_ms']:7.1f} ms  p99 {b['lat_p99_ms']:7.1f} ms   (callback entry -> ack)"
    )
    groups = b.get("cpu") or {}
    print(
        f"  baseline cpu (% of one core): python {groups.get('python', '?')}, rabbitmq "
        f"{groups.get('rabbitmq', '?')}, postgres {groups.get('postgres', '?')}; machine busy "
        f"{groups.get('machine_busy_pct_of_all_cores', '?')} % of {groups.get('cores', '?')} cores"
    )
    print(f"ours / baseline (accept path throughput): {ratio['accept_throughput']:.2f}x")
    print(f"ours / baseline (accept path p50 latency): {ratio['accept_p50_latency']:.2f}x")


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ignored = sorted(k for k in os.environ if k.startswith("EMAILER_"))
    for name in ignored:  # the benchmark configures Emailer (and the sandbox) itself
        del os.environ[name]
    if ignored:
        print(f"note: ignoring {', '.join(ignored)}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup runs

    from emailer.entrypoints.logging import configure

    configure("WARNING", "json")
    python = venv_python()
    try:
        result = run_ours(args, python)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print_ours(result)
    if not args.no_baseline:
        try:
            add_baseline(result, run_baseline(args.baseline, args.n, args.prefetch, python))
            print_baseline(result)
        except BenchError as exc:
            print(f"baseline failed: {exc}", file=sys.stderr)
            result["baseline"], result["ok"] = {"error": str(exc)}, False
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
