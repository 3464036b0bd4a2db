"""End to end: `emailer worker` and `emailer sandbox` as real processes on RabbitMQ and PostgreSQL.

Commands come from a separate kombu client, events are read from a subscriber
queue of our own, and the sandbox tells what reached "SendGrid".
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from kombu.connection import Connection
from sqlalchemy.engine import make_url

from emailer.endpoint.faults import AFTER_COMMIT_BEFORE_PUBLISH
from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Stack, wait_until
from tests.factories import send_email_payload

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]


def sql(stack: Stack, query: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
    dsn = make_url(stack.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


def sent_for(sandbox: SandboxClient, email_id: str) -> list[dict]:  # type: ignore[type-arg]
    return sandbox.messages(email_id=email_id)


def test_send_email_is_queued_then_delivery_started(stack: Stack, tap: EventTap, sandbox_client) -> None:  # type: ignore[no-untyped-def]
    stack.start_worker()
    payload = send_email_payload()
    stack.send_command(payload, correlation_id="checkout-77")
    queued = tap.wait_for("EmailQueued", payload["email_id"])
    started = tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    assert tap.events.index(next(e for e in tap.events if e.type == "EmailQueued")) < tap.events.index(
        next(e for e in tap.events if e.type == "EmailDeliveryStarted")
    )
    for event in (queued, started):
        assert event.headers["NServiceBus.CorrelationId"] == "checkout-77"
        assert event.body["metadata"] == {"order": "1234"}
    assert "content" not in queued.body["attachments"][0]
    [request] = sent_for(sandbox_client, payload["email_id"])
    assert request["body"]["personalizations"][0]["custom_args"]["email_id"] == payload["email_id"]
    assert started.body["provider_message_id"] == request["message_id"]


def test_duplicates_yield_one_email_one_request_one_event(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    payload = send_email_payload()
    message_id = str(uuid.uuid4())
    stack.send_command(payload, message_id=message_id)
    stack.send_command(payload, message_id=message_id)  # the same message delivered twice
    stack.send_command(payload)  # the same command again, under a new message id
    sentinel = send_email_payload()
    stack.send_command(sentinel)  # handled after the duplicates: when it is done, they are too
    stack.start_worker()
    tap.wait_for("EmailDeliveryStarted", sentinel["email_id"])
    tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    assert sql(stack, "SELECT count(*) FROM emails WHERE id = %s", payload["email_id"]) == [(1,)]
    assert len(sent_for(sandbox_client, payload["email_id"])) == 1
    assert len(tap.of("EmailQueued", payload["email_id"])) == 1
    assert len(tap.of("EmailDeliveryStarted", payload["email_id"])) == 1


def test_another_content_under_a_used_email_id_goes_to_the_error_queue_with_the_reason(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    payload = send_email_payload()
    stack.send_command(payload)
    stack.send_command({**payload, "subject": "a different email"}, message_id="the-conflicting-one")
    stack.start_worker()
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        message = wait_until(
            lambda: channel.basic_get(stack.topology.error_queue, no_ack=True), 30, "error queue"
        )
    headers = message.headers
    assert headers["NServiceBus.MessageId"] == "the-conflicting-one"
    reason = headers["NServiceBus.ExceptionInfo.Message"]
    assert f"email_id {payload['email_id']} was already used for a different email (content hash" in reason
    tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    assert sql(stack, "SELECT subject FROM emails WHERE id = %s", payload["email_id"]) == [
        (payload["subject"],)
    ]
    assert len(sent_for(sandbox_client, payload["email_id"])) == 1
    assert len(tap.of("EmailQueued", payload["email_id"])) == 1


def test_a_crash_between_commit_and_publish_loses_nothing(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    crashing = stack.start_worker(extra_env={"EMAILER_CRASH_AT": AFTER_COMMIT_BEFORE_PUBLISH})
    payload = send_email_payload()
    stack.send_command(payload)
    assert crashing.wait_exit(30) == -9  # SIGKILL, right after the commit
    assert sql(stack, "SELECT count(*) FROM emails WHERE id = %s", payload["email_id"]) == [(1,)]
    pending = sql(stack, "SELECT message_type FROM outbox WHERE dispatched_at IS NULL ORDER BY message_type")
    assert pending == [("DispatchEmail",), ("EmailQueued",)]
    assert tap.of("EmailQueued") == []  # nothing was published before the crash
    [(queued_id,)] = sql(stack, "SELECT message_id FROM outbox WHERE message_type = 'EmailQueued'")
    stack.start_worker()
    tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    [queued] = tap.of("EmailQueued", payload["email_id"])
    assert queued.headers["NServiceBus.MessageId"] == queued_id  # the id it was given at commit
    assert len(sent_for(sandbox_client, payload["email_id"])) == 1
    assert sql(stack, "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL") == [(0,)]


def test_a_request_sendgrid_rejects_ends_in_delivery_failed(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    sandbox_client.set_mode("reject", reason="The from address does not match a verified Sender Identity.")
    stack.start_worker()
    payload = send_email_payload()
    stack.send_command(payload)
    failed = tap.wait_for("EmailDeliveryFailed", payload["email_id"])
    assert "Sender Identity" in failed.body["reason"] and failed.body["provider_status"] == 400
    assert sent_for(sandbox_client, payload["email_id"]) == []
    assert tap.of("EmailDeliveryStarted", payload["email_id"]) == []


def test_an_outage_delays_email_then_each_goes_once(stack: Stack, tap: EventTap, sandbox_client) -> None:  # type: ignore[no-untyped-def]
    sandbox_client.set_mode("outage")
    stack.start_worker()
    payloads = [send_email_payload() for _ in range(3)]
    for payload in payloads:
        stack.send_command(payload)

    def retried() -> bool:
        attempts = sql(stack, "SELECT min(attempts) FROM emails WHERE status = 'queued'")[0][0]
        return sql(stack, "SELECT count(*) FROM emails")[0][0] == 3 and (attempts or 0) >= 2

    wait_until(retried, 30, "every email to have failed at least twice against the outage")
    assert sandbox_client.stats()["accepted"] == 0
    sandbox_client.set_mode("normal")
    for payload in payloads:
        tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    for payload in payloads:
        assert len(sent_for(sandbox_client, payload["email_id"])) == 1
        assert len(tap.of("EmailDeliveryStarted", payload["email_id"])) == 1
    assert tap.of("EmailDeliveryFailed") == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (send_email_payload(to=[{"email": "not-an-address"}]), "to.0.email"),
        (send_email_payload(subject="Hi\r\nBcc: everyone@example.com"), "subject"),
        ("{not json", "invalid SendEmail"),
    ],
)
def test_an_invalid_command_goes_to_the_error_queue_with_the_reason(stack: Stack, body, reason) -> None:  # type: ignore[no-untyped-def]
    stack.start_worker()
    if isinstance(body, str):
        with Connection(stack.amqp_url) as conn:
            conn.Producer().publish(
                body,
                exchange="",
                routing_key=stack.topology.input_queue,
                content_type="application/json",
                headers={
                    "NServiceBus.EnclosedMessageTypes": "SendEmail",
                    "NServiceBus.MessageId": "bad-json",
                },
            )
    else:
        stack.send_command(body)
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        message = wait_until(
            lambda: channel.basic_get(stack.topology.error_queue, no_ack=True), 30, "error queue"
        )
    headers = message.headers
    assert reason in headers["NServiceBus.ExceptionInfo.Message"]
    assert headers["NServiceBus.FailedQ"] == stack.topology.input_queue
    assert sql(stack, "SELECT count(*) FROM emails") == [(0,)]


def test_the_worker_refuses_a_database_not_at_head(stack: Stack) -> None:
    downgrade = stack.start("db", "downgrade", "base")
    assert downgrade.wait_exit(60) == 0
    worker = stack.start("worker")
    assert worker.wait_exit(60) == 3
    assert "emailer db upgrade" in "".join(worker.output)


def test_emailer_send_goes_straight_onto_the_bus(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient, tmp_path: Path
) -> None:
    stack.start_worker()
    note = tmp_path / "note.txt"
    note.write_text("attached")
    send = stack.start(
        "send", "--to", "ann@example.com", "--subject", "Hello", "--text", "Hi", "--attach", str(note),
        "--email-id", "cli-over-bus",
    )  # fmt: skip
    assert send.wait_exit(60) == 0, "".join(send.output)
    assert "on queue" in "".join(send.output)
    tap.wait_for("EmailDeliveryStarted", "cli-over-bus")
    [request] = sandbox_client.messages(email_id="cli-over-bus")
    assert request["body"]["attachments"][0]["filename"] == "note.txt"
    status = stack.start("status", "cli-over-bus", "--from-db")
    assert status.wait_exit(60) == 0
    assert "ACCEPTED" in "".join(status.output)


def test_the_gateway_process_accepts_over_http_and_shows_the_timeline(stack: Stack, tap: EventTap) -> None:
    import httpx

    from tests.e2e.harness import answers, free_port

    port = free_port()
    gateway = stack.start("gateway", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/healthz"), 30, "the gateway to listen")
    worker = stack.start_worker()
    payload = send_email_payload()
    response = httpx.post(
        f"{base}/v1/emails", json=payload, headers={"X-Correlation-Id": "web-1"}, timeout=10
    )
    assert response.status_code == 202
    started = tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    assert started.headers["NServiceBus.CorrelationId"] == "web-1"
    view = httpx.get(f"{base}{response.headers['Location']}", timeout=10).json()
    assert view["status"] == "accepted"
    assert [s["kind"] for s in view["timeline"]] == ["queued", "attempt_started", "accepted"]
    checks = httpx.get(f"{base}/readyz", timeout=10).json()["checks"]
    assert checks == {"database": True, "bus": True, "provider sendgrid": True}
    worker.proc.terminate()  # SIGTERM: stop consuming, finish, exit cleanly
    assert worker.wait_exit(30) == 0
    gateway.stop()
