#!/usr/bin/env python3
"""Celery full-path peer: Emailer's full path (SendEmail -> EmailDeliveryStarted) as Celery tasks.

The work per email, the same as Emailer's (same ~1 KB commands as throughput.py):
  accept task   one PostgreSQL transaction (email row ON CONFLICT DO NOTHING + outbox
                row), publish a persistent EmailQueued to a topic exchange and wait
                for its publisher confirm, then queue the dispatch task (Celery's
                own publish, with confirms too, as Emailer's DispatchEmail is);
  dispatch task load the email, mark the attempt in one transaction (as Emailer
                commits before the provider call), POST /v3/mail/send to the
                SendGrid sandbox through ONE httpx.Client per worker process
                (keep-alive pool), then one transaction (status accepted + outbox
                row) and a confirmed EmailDeliveryStarted publish.
Celery: prefork worker, ``-c 2`` by default, acks late, results ignored.

Measurement: N accept tasks are pre-loaded (not timed); the worker is told to
consume them (t0) and the run ends when the subscriber queue holds 2N events;
emails/s = N / elapsed. Checks: N emails accepted in the database, N requests
accepted by the sandbox. It prints one JSON object.

Everything is its own: database ``celery_fp_<random>`` (dropped afterwards),
queues and exchange ``bench-celery-<random>.*`` (deleted afterwards), a sandbox
child process, a unique Celery node name.

Options: --n (2000), --concurrency (2), --prefetch-multiplier (4).
Environment: BENCH_AMQP_URL, BENCH_POSTGRES_URL (as throughput.py).
Needs Celery: ``pip install -e '.[bench]'`` (``make bench`` does it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
# Names of this run's own; set before the worker starts so it inherits them through its environment.
PREFIX = os.environ.setdefault("CELERY_FP_PREFIX", f"bench-celery-{secrets.token_hex(4)}")
TASK_QUEUE, IDLE_QUEUE = f"{PREFIX}.tasks", f"{PREFIX}.idle"
EVENTS_EXCHANGE, SINK_QUEUE = f"{PREFIX}.events", f"{PREFIX}.sink"

SCHEMA = """
CREATE TABLE IF NOT EXISTS fp_emails (
    id text PRIMARY KEY, status text NOT NULL, attempts int NOT NULL DEFAULT 0, body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(), updated_at timestamptz);
CREATE TABLE IF NOT EXISTS fp_outbox (
    message_id uuid PRIMARY KEY, message_type text NOT NULL, body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""

app = Celery("celery_full_path", broker=AMQP_URL)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=int(os.environ.get("CELERY_FP_PREFETCH_MULT", "4")),
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=TASK_QUEUE,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_resources: dict[str, Any] = {}  # per worker process, created in the child on first use


def resources() -> dict[str, Any]:
    if not _resources:
        import httpx
        import psycopg
        from kombu.connection import Connection
        from kombu.entity import Exchange
        from kombu.messaging import Producer

        conn = Connection(AMQP_URL, transport_options={"confirm_publish": True})
        _resources["pg"] = psycopg.connect(os.environ["CELERY_FP_PG_DSN"], autocommit=True)
        _resources["producer"] = Producer(
            conn.channel(), exchange=Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
        )
        _resources["http"] = httpx.Client(
            base_url=os.environ["CELERY_FP_SANDBOX_URL"],
            headers={"Authorization": f"Bearer {os.environ['CELERY_FP_API_KEY']}"},
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            timeout=30.0,
        )
    return _resources


def _event(event_type: str, command: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "type": event_type,
        "email_id": command["email_id"],
        "metadata": command.get("metadata", {}),
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def _store_and_publish(
    pg: Any, producer: Any, event: dict[str, Any], sql: str, params: tuple[Any, ...]
) -> None:
    with pg.transaction():
        pg.execute(sql, params)
        pg.execute(
            "INSERT INTO fp_outbox (message_id, message_type, body) VALUES (%s, %s, %s)",
            (event["message_id"], event["type"], json.dumps(event)),
        )
    producer.publish(
        json.dumps(event).encode(), routing_key=event["type"], delivery_mode=2,
        content_type="application/json", content_encoding="utf-8", retry=False,
    )  # fmt: skip


def accept(command: dict[str, Any]) -> None:
    r = resources()
    sql = "INSERT INTO fp_emails (id, status, body) VALUES (%s, 'queued', %s) ON CONFLICT (id) DO NOTHING"
    params = (command["email_id"], json.dumps(command))
    _store_and_publish(r["pg"], r["producer"], _event("EmailQueued", command), sql, params)
    dispatch_task.apply_async((command["email_id"],), queue=TASK_QUEUE)


def dispatch(email_id: str) -> None:
    from _commands import sendgrid_body

    r = resources()
    pg = r["pg"]
    with pg.transaction():
        row = pg.execute(
            "UPDATE fp_emails SET status = 'dispatching', attempts = attempts + 1, updated_at = now() "
            "WHERE id = %s AND status = 'queued' RETURNING body",
            (email_id,),
        ).fetchone()
    if row is None:
        return  # already dispatched: a redelivered task sends nothing twice
    command = row[0]
    response = r["http"].post("/v3/mail/send", json=sendgrid_body(command))
    if response.status_code != 202:
        raise RuntimeError(f"the sandbox answered {response.status_code}")
    sql = "UPDATE fp_emails SET status = 'accepted', updated_at = now() WHERE id = %s"
    _store_and_publish(pg, r["producer"], _event("EmailDeliveryStarted", command), sql, (email_id,))


accept_task = app.task(name="bench.fp.accept")(accept)
dispatch_task = app.task(name="bench.fp.dispatch")(dispatch)


# ------------------------------------------------------------------ the measurement


def declare(channel: Any) -> None:
    from kombu.entity import Exchange, Queue

    exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
    exchange(channel).declare()
    Queue(SINK_QUEUE, exchange=exchange, routing_key="#", durable=True)(channel).declare()
    for name in (TASK_QUEUE, IDLE_QUEUE):
        Queue(name, durable=True)(channel).declare()


def delete_names(channel: Any) -> None:
    for name in (TASK_QUEUE, IDLE_QUEUE, SINK_QUEUE):
        channel.queue_delete(name)
    channel.exchange_delete(EVENTS_EXCHANGE)


def depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


def start_worker(env: dict[str, str], node: str, concurrency: int, log: Any) -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, "-m", "celery", "-A", "celery_full_path", "worker", "-c", str(concurrency),
           "-P", "prefork", "-Q", IDLE_QUEUE, "-n", node, "-l", "WARNING", "--without-heartbeat",
           "--without-gossip", "--without-mingle"]  # fmt: skip
    worker = subprocess.Popen(cmd, cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[node], timeout=0.5):
        if time.monotonic() > deadline or worker.poll() is not None:
            raise RuntimeError("the Celery worker did not come up")
    return worker


def measure(n: int, concurrency: int, prefetch_multiplier: int, workdir: Path) -> dict[str, Any]:
    import psycopg
    from _commands import make_command
    from _support import Sandbox, create_database, drop_database, libpq_url, shared_cpu_meter, stop_process
    from kombu.connection import Connection

    from emailer.sandbox.client import SandboxClient

    run_id = PREFIX.rsplit("-", 1)[-1]
    db_name = f"celery_fp_{run_id}"
    create_database(POSTGRES_URL, db_name)
    dsn = libpq_url(POSTGRES_URL, db_name)
    api_key = f"SG.{secrets.token_urlsafe(24)}"
    sandbox = Sandbox(sys.executable, workdir, {**os.environ, "EMAILER_SANDBOX_API_KEY": api_key})
    conn = Connection(AMQP_URL, connect_timeout=10)
    channel = conn.channel()
    worker = None
    try:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute(SCHEMA)
        declare(channel)
        env = {**os.environ, "CELERY_FP_PREFIX": PREFIX, "CELERY_FP_PG_DSN": dsn,
               "CELERY_FP_SANDBOX_URL": sandbox.url, "CELERY_FP_API_KEY": api_key,
               "CELERY_FP_PREFETCH_MULT": str(prefetch_multiplier)}  # fmt: skip
        node = f"bench-fp-{run_id}@localhost"
        with open(workdir / "celery.log", "wb") as log:
            worker = start_worker(env, node, concurrency, log)
            for i in range(n):
                accept_task.apply_async((json.loads(make_command(i, run_id).body),), queue=TASK_QUEUE)
            deadline = time.monotonic() + 120
            while depth(channel, TASK_QUEUE) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("pre-loading the tasks did not finish")
                time.sleep(0.05)
            cpu = shared_cpu_meter()
            if cpu is not None:
                cpu.start()
            t0 = time.monotonic()
            app.control.add_consumer(TASK_QUEUE, destination=[node], reply=True, timeout=5)
            deadline = t0 + 900
            while depth(channel, SINK_QUEUE) < 2 * n:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"timed out: {depth(channel, SINK_QUEUE)}/{2 * n} events")
                time.sleep(0.02)
            elapsed = time.monotonic() - t0
            cpu_use = cpu.stop() if cpu is not None else {}
        with psycopg.connect(dsn, autocommit=True) as pg:
            row = pg.execute("SELECT count(*) FILTER (WHERE status = 'accepted') FROM fp_emails").fetchone()
            accepted_in_db = int(row[0]) if row else 0
        with SandboxClient(sandbox.url, api_key) as client:
            accepted = int(client.stats()["accepted"])
        return {
            "bench": "celery_full_path",
            "variant": f"c{concurrency}_pm{prefetch_multiplier}_acks_late",
            "n": n,
            "elapsed_s": round(elapsed, 3),
            "emails_per_s": round(n / elapsed, 1),
            "cpu": cpu_use,
            "check": {"accepted_in_db": accepted_in_db, "sandbox_accepted": accepted},
            "ok": accepted_in_db == n and accepted == n,
        }
    finally:
        if worker is not None:
            stop_process(worker)
        delete_names(channel)
        conn.release()
        sandbox.stop()
        drop_database(POSTGRES_URL, db_name)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--prefetch-multiplier", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="celery-fp-") as workdir:
        result = measure(args.n, args.concurrency, args.prefetch_multiplier, Path(workdir))
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
