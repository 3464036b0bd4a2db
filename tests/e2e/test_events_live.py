"""Events seen by processes: `emailer events tail` and the SSE stream on `emailer run`; tail on RabbitMQ."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from handlers.unit_of_work import event_message_id
from tests.e2e.harness import EventTap, Process, Stack, base_env, free_port, wait_until
from tests.e2e.test_embedded import cli, processes, start_run  # noqa: F401 - the fixture is used
from tests.factories import send_email_payload

pytestmark = pytest.mark.e2e

LIFECYCLE = ["EmailQueued", "EmailDeliveryStarted", "EmailRecipientDelivered", "EmailDeliveryCompleted"]


def misordered_by_id(email_id: str) -> bool:
    """True if this email's last three event ids, sorted, are not in their order (one commit writes them)."""
    ids = [event_message_id(email_id, n) for n in (2, 3, 4)]
    return sorted(ids) != ids


def test_events_tail_and_the_sse_stream_show_an_email_sent_with_emailer_run(
    tmp_path: Path,
    processes: list[Process],  # noqa: F811
) -> None:
    port = free_port()
    env = {**base_env(tmp_path), "EMAILER_GATEWAY_PORT": str(port), "EMAILER_EVENT_STREAM_POLL": "0.05"}
    start_run(tmp_path, env, processes)
    url = f"http://127.0.0.1:{port}"
    email_id = next(f"tail-{n}" for n in range(100) if misordered_by_id(f"tail-{n}"))  # order must be earned

    tail = Process(
        ["events", "tail", "--email-id", email_id, "--count", "4", "--gateway-url", url], env, tmp_path
    )
    processes.append(tail)
    tail.wait_for_line("tailing events from the gateway", timeout=30)

    streamed: list[ServerSentEvent] = []
    opened = threading.Event()

    def read_stream() -> None:  # what `curl -N .../v1/emails/<id>/events` shows
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
            connect_sse(client, "GET", f"{url}/v1/emails/{email_id}/events") as source,
        ):
            opened.set()
            for event in source.iter_sse():
                streamed.append(event)
                if len(streamed) == len(LIFECYCLE):
                    return

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert opened.wait(10)

    sent = cli(tmp_path, env, "send", "--to", "ann@example.com", "--subject", "Hi", "--text", "Hello",
               "--email-id", email_id)  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    assert tail.wait_exit(30) == 0, "".join(tail.output)
    lines = [line.split() for line in tail.output if email_id in line]
    assert [parts[1] for parts in lines] == LIFECYCLE
    assert [parts[3] for parts in lines] == [event_message_id(email_id, n) for n in range(1, 5)]

    reader.join(30)
    assert [e.event for e in streamed] == LIFECYCLE  # live: the stream was open before the email existed
    assert [e.id for e in streamed] == [event_message_id(email_id, n) for n in range(1, 5)]


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_events_tail_on_rabbitmq_uses_an_exclusive_queue_of_its_own(stack: Stack, tap: EventTap) -> None:
    stack.start_worker()
    payload = send_email_payload()
    tail = stack.start("events", "tail", "--email-id", payload["email_id"], "--count", "2", "--json",
                       "--type", "EmailQueued", "--type", "EmailDeliveryStarted")  # fmt: skip
    tail.wait_for_line("tailing events from the exchange", timeout=30)
    message_id = stack.send_command(payload, correlation_id="tail-corr-1")
    assert tail.wait_exit(60) == 0, "".join(tail.output)
    printed = [json.loads(line) for line in tail.output if line.startswith("{")]
    assert [p["type"] for p in printed] == ["EmailQueued", "EmailDeliveryStarted"]
    assert {p["correlation_id"] for p in printed} == {"tail-corr-1"}
    assert all(p["event"]["email_id"] == payload["email_id"] for p in printed)
    assert message_id
    # Its queue was exclusive and auto-deleted: nothing of it is left on the broker.
    queue_name = next(line for line in tail.output if "tailing" in line).split("(queue ")[1].rstrip(")\n")
    with pytest.raises(Exception, match="NOT_FOUND|404"):
        from kombu.connection import Connection

        with Connection(stack.amqp_url) as conn:
            conn.channel().queue_declare(queue_name, passive=True)
    wait_until(lambda: tap.of("EmailDeliveryStarted", payload["email_id"]), 30, "the tap to see it too")
