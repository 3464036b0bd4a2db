"""Webhook benchmark: signed SendGrid batches into one ``emailer ingress``, then one worker applying them.

  1. A new PostgreSQL database (migrated), its own RabbitMQ names, a subscriber
     queue bound to ``#``; ``--emails`` accepted emails of two recipients each are
     written straight to the database (not timed).
  2. ``emailer ingress`` runs as a child process (one process, its defaults)
     with a fresh P-256 verification key. ``--batches`` batches of
     ``--events`` SendGrid events each (processed, delivered, open, click per
     recipient, custom args flattened in, padded to about ``--batch-kb`` KB like
     SendGrid's ~768 KB batches) are signed and posted by ``--clients``
     threads. Measured: events answered 2xx per second (wall time from the
     first post to the last answer), p50/p99 per batch, the ingress's CPU.
  3. Nothing consumed meanwhile; then ONE worker (``Worker(bootstrap(...))`` in
     this process, ``--prefetch`` / ``--batch-size``) applies the queued
     ``RecordDeliveryReports``. Measured: events applied per second (until every
     event id is in ``provider_events``), p50/p99 of the time per
     ``RecordDeliveryReports`` (one posted batch), the worker's CPU.

    .venv/bin/python bench/webhooks.py                 # 50 batches of 1,000 events
    .venv/bin/python bench/webhooks.py --batches 10    # a quick check

``BENCH_AMQP_URL`` and ``BENCH_POSTGRES_URL`` as for ``throughput.py``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _ours import LoadSampler
from _support import (
    BenchError,
    create_database,
    drop_database,
    percentile,
    process_cpu_seconds,
    stop_process,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
STORY = ("processed", "delivered", "open", "click")
"""The events each recipient gets, in this order (4 per recipient, 8 per email)."""
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=50, help="batches posted (default 50)")
    p.add_argument("--events", type=int, default=1000, help="events per batch (default 1000)")
    p.add_argument("--batch-kb", type=int, default=768, help="padded size of a batch in KB (default 768)")
    p.add_argument("--clients", type=int, default=4, help="posting threads (default 4)")
    p.add_argument("--prefetch", type=int, default=8, help="worker prefetch (default 8)")
    p.add_argument("--batch-size", type=int, default=4, help="messages per worker transaction (default 4)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds the worker may take (default 600)")
    p.add_argument("--json", type=Path, help="append the figures as one JSON line to this file")
    return p.parse_args(argv)


# ------------------------------------------------------------------ data


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }


def recipients(email_id: str) -> list[str]:
    return [f"a-{email_id}@example.com", f"b-{email_id}@example.org"]


def seed_emails(database_url: str, count: int, run_id: str) -> list[str]:
    """``count`` emails accepted by SendGrid, written through the unit of work (not timed)."""
    from sqlalchemy import text

    from contracts import SendEmail
    from emailer.adapters.clock import SystemClock
    from emailer.adapters.persistence.engine import make_engine
    from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
    from emailer.domain import Email, RetryPolicy

    engine, clock, policy = make_engine(database_url), SystemClock(), RetryPolicy()
    ids = [f"wh-{run_id}-{i}" for i in range(count)]
    try:
        for start in range(0, count, 500):
            uow = SqlUnitOfWork(engine, clock)
            with uow:
                for email_id in ids[start : start + 500]:
                    command = SendEmail.model_validate(
                        {"email_id": email_id, "from": {"email": "shop@example.com"},
                         "to": [{"email": a} for a in recipients(email_id)], "subject": "Hi", "text": "Hi"}
                    )  # fmt: skip
                    email = Email.queue(command, [], clock.now())
                    email.start_attempt(clock.now(), policy)
                    email.delivery_started("sendgrid", f"msg-{email_id}", clock.now())
                    uow.emails.add(email)
                uow.commit()
        with engine.begin() as conn:  # their messages are history: nothing for the worker's sweep to send
            conn.execute(text("DELETE FROM outbox"))
    finally:
        engine.dispose()
    return ids


def make_batches(email_ids: list[str], batches: int, per_batch: int, batch_kb: int) -> list[bytes]:
    """Every recipient's story, cut into batches; each event padded so a batch is about ``batch_kb`` KB."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for email_id in email_ids:
        for r_index, address in enumerate(recipients(email_id)):
            for step, kind in enumerate(STORY):
                event: dict[str, Any] = {
                    "email": address, "event": kind, "timestamp": now + step,
                    "sg_event_id": uuid.uuid4().hex,
                    "sg_message_id": f"msg-{email_id}.filter0001.{r_index}.0",
                    "smtp-id": f"<msg-{email_id}@example.com>", "category": ["orders", "shipping"],
                    "email_id": email_id, "order": "1234",
                }  # fmt: skip
                if kind == "delivered":
                    event.update({"response": "250 2.0.0 OK  1700000000 ab12cd34ef56 - gsmtp", "tls": 1})
                if kind in ("open", "click"):
                    event.update({"useragent": USER_AGENT, "ip": "203.0.113.7", "sg_machine_open": False})
                if kind == "click":
                    event["url"] = "https://shop.example.com/orders/1234?utm_source=email"
                events.append(event)
    events = events[: batches * per_batch]
    if len(events) < batches * per_batch:
        raise BenchError(f"{len(email_ids)} emails make only {len(events)} events")
    plain = len(json.dumps(events[:per_batch]).encode())
    pad = max(0, (batch_kb * 1024 - plain) // per_batch - len(', "note": ""'))
    for event in events:
        event["note"] = "x" * pad  # a custom arg, as senders put their own data in them
    return [json.dumps(events[i : i + per_batch]).encode() for i in range(0, len(events), per_batch)]


# ------------------------------------------------------------------ the ingress


def start_ingress(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    log = workdir / "ingress.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emailer.entrypoints.cli", "ingress", "--port", str(port)],
            env={**env, "EMAILER_INGRESS_PORT": str(port)}, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, f"{url}/webhooks/sendgrid", log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_process(proc)
    raise BenchError(f"the ingress did not come up; its output:\n{log.read_text()[-3000:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_all(url: str, batches: list[bytes], signer: Signer, clients: int) -> tuple[float, list[float], int]:
    """Post every batch (``clients`` at a time); wall seconds, per-batch seconds, batches not answered 2xx."""
    local = threading.local()

    def post(body: bytes) -> tuple[float, int]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=60)
        headers = signer.headers(body)
        t0 = time.perf_counter()
        status = client.post(url, content=body, headers=headers).status_code
        return time.perf_counter() - t0, status

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, batches))
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], sum(1 for r in results if not 200 <= r[1] < 300)


# ------------------------------------------------------------------ the worker


def apply_all(settings: Any, total_events: int, timeout: float) -> dict[str, Any]:
    """One worker until every event id is recorded; wall seconds, per-message seconds, CPU."""
    from sqlalchemy import func, select

    from emailer.adapters.persistence.tables import provider_events
    from emailer.bootstrap import bootstrap
    from emailer.entrypoints.worker import Worker

    app = bootstrap(settings)
    per_message: list[float] = []
    handle_batch = app.pipeline.handle_batch

    def timed(deliveries: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        handle_batch(deliveries)
        if deliveries:
            per_message.extend([(time.perf_counter() - t0) / len(deliveries)] * len(deliveries))

    app.pipeline.handle_batch = timed  # type: ignore[method-assign]  # the worker reads it when it starts
    worker = Worker(app)
    cpu0, t0 = time.process_time(), time.perf_counter()
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with app.engine.connect() as conn:
                done = conn.execute(select(func.count()).select_from(provider_events)).scalar_one()
            if done >= total_events:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the worker applied {done} of {total_events} events in {timeout}s")
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        worker.stop()
        app.close()
    return {"wall": wall, "per_message": per_message, "cpu": cpu}


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    from kombu.connection import Connection

    from emailer.adapters.bus import Topology
    from emailer.adapters.persistence.engine import make_engine
    from emailer.adapters.persistence.schema import upgrade
    from emailer.config import load_settings

    args = parse_args(argv)
    run_id = secrets.token_hex(4)
    prefix = f"bench-{run_id}"
    topology = Topology(f"{prefix}.emailer", f"{prefix}.events", f"{prefix}.error")
    total = args.batches * args.events
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix=f"emailer-{prefix}-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        db_name = f"emailer_bench_{run_id}"
        database_url = create_database(POSTGRES_URL, db_name)
        cleanup.callback(drop_database, POSTGRES_URL, db_name)
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        conn = cleanup.enter_context(Connection(AMQP_URL, connect_timeout=10))
        channel = conn.channel()
        topology.declare(channel)
        topology.subscriber_queue(f"{prefix}.sink", ["#"])(channel).declare()
        cleanup.callback(_delete_queues, conn, topology, f"{prefix}.sink")

        emails = -(-total // (len(STORY) * 2))
        print(f"seeding {emails} accepted emails ...", file=sys.stderr)
        batches = make_batches(
            seed_emails(database_url, emails, run_id), args.batches, args.events, args.batch_kb
        )
        signer = Signer()
        internal_key = secrets.token_urlsafe(32)  # the ingress signs what the worker verifies
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
        env.update({
            "EMAILER_BUS_URL": AMQP_URL, "EMAILER_INPUT_QUEUE": topology.input_queue,
            "EMAILER_EVENTS_EXCHANGE": topology.events_exchange, "EMAILER_ERROR_QUEUE": topology.error_queue,
            "EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS": signer.public_key, "EMAILER_LOG_LEVEL": "WARNING",
            "EMAILER_VAR_DIR": str(workdir / "var"), "EMAILER_INTERNAL_KEY": internal_key,
        })  # fmt: skip
        proc, url, log = start_ingress(workdir, env)
        cleanup.callback(stop_process, proc)
        cpu0 = process_cpu_seconds(proc.pid) or 0.0
        print(f"posting {args.batches} batches of {args.events} events ...", file=sys.stderr)
        load = LoadSampler()
        load.start()
        wall, latencies, refused = post_all(url, batches, signer, args.clients)
        post_load = load.finish()
        ingress_cpu = (process_cpu_seconds(proc.pid) or 0.0) - cpu0
        if refused:
            raise BenchError(
                f"{refused} batches were not answered 2xx; ingress log:\n{log.read_text()[-3000:]}"
            )

        print("applying them with one worker ...", file=sys.stderr)
        settings = load_settings(
            _env_file=None, var_dir=workdir / "var", bus_url=AMQP_URL, database_url=database_url,
            input_queue=topology.input_queue, events_exchange=topology.events_exchange,
            error_queue=topology.error_queue, prefetch=args.prefetch, batch_size=args.batch_size,
            log_level="WARNING", log_format="json", internal_key=internal_key,
        )  # fmt: skip
        load = LoadSampler()
        load.start()
        applied = apply_all(settings, total, args.timeout)
        apply_load = load.finish()

    lat = sorted(latencies)
    per = sorted(applied["per_message"])
    result = {
        "batches": args.batches,
        "events_per_batch": args.events,
        "batch_bytes": round(sum(len(b) for b in batches) / len(batches)),
        "clients": args.clients,
        "answered_events_per_s": round(total / wall),
        "answered_batch_p50_ms": round(percentile(lat, 50) * 1000, 1),
        "answered_batch_p99_ms": round(percentile(lat, 99) * 1000, 1),
        "ingress_cpu_s": round(ingress_cpu, 2),
        "ingress_wall_s": round(wall, 2),
        "answering_load_mean_max": [post_load["mean"], post_load["max"]],
        "worker_prefetch": args.prefetch,
        "worker_batch_size": args.batch_size,
        "applied_events_per_s": round(total / applied["wall"]),
        "applied_batch_p50_ms": round(percentile(per, 50) * 1000, 1),
        "applied_batch_p99_ms": round(percentile(per, 99) * 1000, 1),
        "worker_cpu_s": round(applied["cpu"], 2),
        "worker_wall_s": round(applied["wall"], 2),
        "applying_load_mean_max": [apply_load["mean"], apply_load["max"]],
        "emailer": str(Path(sys.modules["emailer"].__file__ or "").parent.parent),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


def _delete_queues(conn: Any, topology: Any, sink: str) -> None:
    channel = conn.channel()
    for queue in (topology.input_queue, topology.error_queue, sink):
        with contextlib.suppress(Exception):
            channel.queue_delete(queue)
    with contextlib.suppress(Exception):
        channel.exchange_delete(topology.events_exchange)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
