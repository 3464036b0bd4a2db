"""What one benchmark run owns and checks: its names, database, sandbox and broker connection.

Everything here is created per run with unique names (``bench-<random>.*``
queues, database ``emailer_bench_<random>``) and removed again, on failure too,
so runs never touch another engineer's queues or databases.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _commands import Command
from _support import BenchError, Sandbox, create_database, drop_database

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def preload(conn: Any, queue: str, commands: list[Command], timeout: float = 120.0) -> float:
    """Publish the commands as another service would (persistent, NServiceBus headers); wait for N."""
    from kombu.messaging import Producer

    t0 = time.perf_counter()
    channel = conn.channel()
    producer = Producer(channel)
    for c in commands:
        publish_command(producer, queue, c)
    wait_depth(channel, queue, len(commands), timeout, f"pre-loading {len(commands)} commands")
    channel.close()
    return time.perf_counter() - t0


def publish_command(producer: Any, queue: str, c: Command) -> None:
    """As another service would send it: persistent, NServiceBus headers, no confirm awaited."""
    producer.publish(
        c.body, exchange="", routing_key=queue, delivery_mode=2, retry=False,
        content_type="application/json", content_encoding="utf-8", message_id=c.message_id,
        headers={"NServiceBus.MessageId": c.message_id, "NServiceBus.EnclosedMessageTypes": "SendEmail"},
    )  # fmt: skip


def queue_depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


def wait_count(count: Callable[[], int], n: int, timeout: float) -> int:
    """``count()`` every 50 ms until it reaches ``n`` or ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while (got := count()) < n and time.monotonic() <= deadline:
        time.sleep(0.05)
    return got


def wait_depth(channel: Any, queue: str, n: int, timeout: float, what: str) -> int:
    depth = wait_count(lambda: queue_depth(channel, queue), n, timeout)
    if depth < n:
        raise BenchError(f"{what}: queue {queue} holds {depth} messages, not {n}, after {timeout}s")
    return depth


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
def stack(python: str, keep_db: bool) -> Iterator[Stack]:
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
        delay_queues = [topology.delay_queue_name(seconds) for seconds in sorted(set(topology.delays))]
        for queue in (topology.input_queue, topology.error_queue, sink_queue, *delay_queues):
            channel.queue_delete(queue)  # the delay queues: the workers declared them
        channel.exchange_delete(topology.events_exchange)


def quietly(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run a cleanup step; a failure is reported and does not stop the other steps."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - cleanup goes on
        print(f"cleanup: could not {what}: {type(exc).__name__}: {exc}", file=sys.stderr)


def emailer_settings(s: Stack, prefetch: int, batch_size: int, internal_key: str) -> dict[str, Any]:
    """Settings for ``load_settings(**...)``, JSON-able: the worker processes read them from a file."""
    return {
        "var_dir": str(s.workdir / "var"),
        "bus_url": AMQP_URL,
        "internal_key": internal_key,  # the same for every worker: each verifies what the others signed
        "database_url": s.database_url,
        "input_queue": s.topology.input_queue,
        "events_exchange": s.topology.events_exchange,
        "error_queue": s.topology.error_queue,
        "prefetch": prefetch,
        "batch_size": batch_size,
        "provider": "sendgrid",
        "sendgrid_api_key": s.api_key,
        "sendgrid_base_url": s.sandbox.url,
        "log_level": "WARNING",
        "log_format": "json",
    }


def first_error_reason(channel: Any, queue: str) -> str:
    from kombu.entity import Queue

    message = Queue(queue, no_declare=True)(channel).get(no_ack=False)
    if message is None:
        return "(gone)"
    return str((message.headers or {}).get("NServiceBus.ExceptionInfo.Message", "(no reason header)"))


def end_state(app: Any, s: Stack, commands: list[Command], events: Callable[[Any], int]) -> dict[str, Any]:
    """What the run left behind: database, outbox, sandbox, the subscriber's events, error queue.

    ``events(channel)``: how many events the subscriber holds (``_ours.SubscriberEvents.count``)."""
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
    held = wait_count(lambda: events(channel), 2 * len(commands), 10.0)  # a shortfall shows below
    check = {
        "emails_in_db": sum(statuses.values()),
        "email_statuses": statuses,
        "sandbox_accepted": accepted,
        "sandbox_distinct_emails": len(sent_ids & ours),
        "outbox_pending": app.outbox.pending_count(),
        "events_on_subscriber_queue": held,
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
