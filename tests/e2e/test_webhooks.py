"""The webhook loop end to end: `emailer worker`, `emailer ingress` and `emailer sandbox` as processes.

The sandbox posts SendGrid-shaped, signed batches to the ingress, which puts
them on RabbitMQ; the worker applies them to PostgreSQL and publishes the
public events a subscriber's queue (the tap) receives.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from kombu.connection import Connection
from sqlalchemy.engine import make_url

from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Process, Stack, base_env, free_port, new_api_key, wait_until
from tests.proxy import TcpProxy
from tests.webhooks import Signer, encode, sg_event

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

SIX = {
    "bounce@example.com": ("failed", "EmailRecipientDeliveryFailed"),
    "blocked@example.com": ("failed", "EmailRecipientDeliveryFailed"),
    "defer-then-deliver@example.com": ("delivered", "EmailRecipientDelivered"),
    "drop@example.com": ("failed", "EmailRecipientDeliveryFailed"),
    "open-click@example.com": ("delivered", "EmailRecipientDelivered"),
    "ana@example.com": ("delivered", "EmailRecipientDelivered"),
}
EXPECTED_EVENTS = {
    "EmailQueued": 1, "EmailDeliveryStarted": 1, "EmailRecipientDelivered": 3,
    "EmailRecipientDeliveryFailed": 3, "EmailRecipientDeferred": 1, "EmailRecipientOpened": 1,
    "EmailRecipientClicked": 1, "EmailDeliveryCompleted": 1,
}  # fmt: skip
PATH = "/webhooks/sendgrid"


@pytest.fixture
def ingress_port() -> int:
    return free_port()


@pytest.fixture
def sandbox_webhook(tmp_path: Path, ingress_port: int) -> Iterator[tuple[str, str, str]]:
    """A sandbox posting its webhooks to the ingress's port: (url, api key, public key)."""
    api_key, port = new_api_key(), free_port()
    env = {
        **base_env(tmp_path),
        "EMAILER_SANDBOX_API_KEY": api_key,
        "EMAILER_SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{ingress_port}{PATH}",
        "EMAILER_SANDBOX_WEBHOOK_BATCH_INTERVAL": "0.3",
    }
    process = Process(["sandbox", "--port", str(port)], env, tmp_path)
    try:
        line = process.wait_for_line("public key (SendGrid format):")
        process.wait_for_line("sandbox listening")
        yield f"http://127.0.0.1:{port}", api_key, line.rsplit(":", 1)[1].strip()
    finally:
        process.stop()


@pytest.fixture
def sandbox(sandbox_webhook: tuple[str, str, str]) -> Iterator[tuple[str, str, SandboxClient]]:
    """Overrides the stack's sandbox: this one posts webhooks."""
    url, api_key, _ = sandbox_webhook
    with SandboxClient(url, api_key) as client:
        yield url, api_key, client


@pytest.fixture
def signer() -> Signer:
    """A second verification key the ingress trusts (as during a rotation): the test signs with it."""
    return Signer.new()


def start_ingress(stack: Stack, port: int, keys: list[str], bus_url: str | None = None) -> str:
    env = {"EMAILER_INGRESS_PORT": str(port), "EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS": ",".join(keys)}
    if bus_url:
        env["EMAILER_BUS_URL"] = bus_url
    stack.start("ingress", extra_env=env).wait_for_line("ingress listening")
    return f"http://127.0.0.1:{port}{PATH}"


def send_six(stack: Stack) -> str:
    email_id = f"wh-{uuid.uuid4().hex[:12]}"
    stack.send_command(
        {
            "email_id": email_id,
            "from": {"email": "shop@example.com"},
            "to": [{"email": a} for a in SIX],
            "subject": "Your order",
            "text": "Hi",
        }
    )
    return email_id


def status_of(stack: Stack, email_id: str) -> dict[str, Any]:
    process = stack.start("status", email_id, "--from-db", "--json")
    assert process.wait_exit(60) == 0, "".join(process.output)
    view: dict[str, Any] = json.loads("".join(process.output))
    return view


def provider_event_ids(database_url: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM provider_events").fetchone()
    return int(row[0]) if row else 0


def assert_settled_once(tap: EventTap, email_id: str, reordered: bool = False) -> None:
    tap.wait_for("EmailDeliveryCompleted", email_id, timeout=60)
    wait_until(lambda: len(tap.of("EmailRecipientClicked", email_id)) >= 1, 30, "the click")
    tap.drain()
    events = [e for e in tap.events if e.body.get("email_id") == email_id]
    counts = {t: sum(e.type == t for e in events) for t in EXPECTED_EVENTS}
    if reordered and counts["EmailRecipientDeferred"] == 0:
        counts["EmailRecipientDeferred"] = 1  # a deferral that arrives after the delivery changes nothing
    assert counts == EXPECTED_EVENTS
    ids = [e.headers["NServiceBus.MessageId"] for e in events]
    assert len(ids) == len(set(ids)), "a public event was published twice"
    order = [e.type for e in events]
    last_final = max(
        i for i, t in enumerate(order) if t in ("EmailRecipientDelivered", "EmailRecipientDeliveryFailed")
    )
    assert order.index("EmailDeliveryCompleted") > last_final
    [completed] = [e for e in events if e.type == "EmailDeliveryCompleted"]
    assert {o["recipient"]: o["outcome"] for o in completed.body["outcomes"]} == {
        a: s for a, (s, _) in SIX.items()
    }
    failures = {
        e.body["recipient"]: e.body["failure"] for e in events if e.type == "EmailRecipientDeliveryFailed"
    }
    assert failures == {
        "bounce@example.com": "bounced",
        "blocked@example.com": "blocked",
        "drop@example.com": "dropped",
    }


def test_six_recipients_six_stories_each_event_once(
    stack: Stack, tap: EventTap, ingress_port: int, sandbox_webhook: tuple[str, str, str]
) -> None:
    start_ingress(stack, ingress_port, [sandbox_webhook[2]])
    stack.start_worker()
    email_id = send_six(stack)
    assert_settled_once(tap, email_id)
    view = status_of(stack, email_id)
    assert {r["address"]: r["status"] for r in view["recipients"]} == {a: s for a, (s, _) in SIX.items()}
    assert view["completed_at"] is not None


def test_a_batch_posted_twice_and_shuffled_settles_the_same(
    stack: Stack,
    tap: EventTap,
    ingress_port: int,
    sandbox_webhook: tuple[str, str, str],
    sandbox_client: SandboxClient,
) -> None:
    sandbox_client.set_webhook_mode("duplicate-shuffle")
    start_ingress(stack, ingress_port, [sandbox_webhook[2]])
    stack.start_worker()
    email_id = send_six(stack)
    assert_settled_once(tap, email_id, reordered=True)
    assert sandbox_client.webhook()["accepted_posts"] >= 2
    view = status_of(stack, email_id)
    assert {r["address"]: r["status"] for r in view["recipients"]} == {a: s for a, (s, _) in SIX.items()}


def input_depth(stack: Stack) -> int:
    with Connection(stack.amqp_url) as conn:
        _, count, _ = conn.default_channel.queue_declare(stack.topology.input_queue, passive=True)
    return int(count)


def test_refused_webhooks_record_nothing(
    stack: Stack, ingress_port: int, sandbox_webhook: tuple[str, str, str], signer: Signer
) -> None:
    url = start_ingress(
        stack, ingress_port, [sandbox_webhook[2], signer.public_key]
    )  # no worker: count the queue
    body = encode([sg_event("delivered", "ana@example.com", email_id="e-1")])
    old = int(time.time()) - 600
    cases = {
        "one byte changed": (body.replace(b"ana", b"anb"), signer.headers(body), 403),
        "no signature": (body, {"Content-Type": "application/json"}, 403),
        "timestamp 10 minutes old": (body, signer.headers(body, timestamp=old), 403),
        "5 MB body": (b"[" + b" " * (5 * 1024 * 1024) + b"]", signer.headers(b"[]"), 413),
        "malformed JSON": (b"[{", signer.headers(b"[{"), 400),
    }
    with httpx.Client(timeout=30) as http:
        for what, (content, headers, expected) in cases.items():
            response = http.post(url, content=content, headers=headers)
            assert response.status_code == expected, what
            assert input_depth(stack) == 0, f"{what}: something was recorded"
        assert http.post(url, content=body, headers=signer.headers(body)).status_code == 200
    wait_until(lambda: input_depth(stack) == 1, 10, "the accepted batch on the input queue")


def test_a_broker_cut_off_from_the_ingress_gives_503_then_the_retry_is_applied_once(
    stack: Stack, tap: EventTap, ingress_port: int, sandbox_webhook: tuple[str, str, str], signer: Signer
) -> None:
    amqp = urlsplit(stack.amqp_url)
    with TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
        proxied = stack.amqp_url.replace(amqp.netloc.split("@")[-1], f"{proxy.host}:{proxy.port}")
        url = start_ingress(stack, ingress_port, [signer.public_key], bus_url=proxied)
        stack.start_worker()
        email_id = f"wh-{uuid.uuid4().hex[:12]}"
        stack.send_command({"email_id": email_id, "from": {"email": "shop@example.com"},
                            "to": [{"email": "ana@example.com"}], "subject": "Hi", "text": "Hi"})  # fmt: skip
        tap.wait_for("EmailDeliveryStarted", email_id, timeout=60)
        ours = [sg_event("delivered", "ana@example.com", email_id=email_id, response="250 OK")]
        body = encode(ours)
        with httpx.Client(timeout=60) as http:
            proxy.cut()
            response = http.post(url, content=body, headers=signer.headers(body))
            assert response.status_code == 503 and response.headers["Retry-After"]
            proxy.restore()
            retried = wait_until(
                lambda: http.post(url, content=body, headers=signer.headers(body)).status_code == 200,
                60,
                "the ingress to take the batch once the broker is back",
                interval=0.5,
            )
            assert retried
            assert http.post(url, content=body, headers=signer.headers(body)).status_code == 200  # and again
    tap.wait_for("EmailDeliveryCompleted", email_id, timeout=60)
    wait_until(lambda: provider_event_ids(stack.database_url) >= 1, 10, "the report recorded")
    assert len(tap.of("EmailRecipientDelivered", email_id)) == 1
    assert provider_event_ids(stack.database_url) == 1
