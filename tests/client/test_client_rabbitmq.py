"""The client package against a real RabbitMQ, with kombu playing Emailer's side.

What Emailer publishes is built here the way its bus adapter does (events on a
topic exchange, routing key = type name, ``NServiceBus.*`` headers, a stable
message id), so these tests need no worker; the end-to-end ones use a real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from emailer_client import Emailer, WaitTimeout
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

from contracts import (
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailRecipientDelivered,
    SendEmail,
)
from contracts.wire import H
from tests.conftest import CLIENT_SRC
from tests.e2e.harness import wait_until
from tests.factories import send_email

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def names(rabbitmq_url: str, unique_name: str) -> Iterator[dict[str, str]]:
    found = {
        "endpoint": f"{unique_name}.emailer",
        "exchange": f"{unique_name}.events",
        "sub": f"{unique_name}.sub",
    }
    with Connection(rabbitmq_url) as conn:
        Queue(found["endpoint"], durable=True)(conn.channel()).declare()
    yield found
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        for name in (found["endpoint"], found["sub"]):
            channel.queue_delete(name)
        channel.exchange_delete(found["exchange"])


def publish_event(url: str, exchange: str, event: Any, message_id: str | None = None) -> str:
    """What Emailer's outbox relay does for one event."""
    message_id = message_id or str(uuid.uuid4())
    headers = {H.MESSAGE_ID: message_id, H.ENCLOSED_MESSAGE_TYPES: event.type_name(), H.CORRELATION_ID: "c-1"}
    topic = Exchange(exchange, type="topic", durable=True)
    with Connection(url) as conn:
        Producer(conn.channel()).publish(
            event.model_dump_json(by_alias=True), exchange=topic, routing_key=event.type_name(),
            headers=headers, message_id=message_id, content_type="application/json", delivery_mode=2,
            declare=[topic],
        )  # fmt: skip
    return message_id


def started(email_id: str) -> EmailDeliveryStarted:
    return EmailDeliveryStarted(email_id=email_id, occurred_at=datetime.now(UTC), provider="sandbox")


def delivered(email_id: str) -> EmailRecipientDelivered:
    return EmailRecipientDelivered(
        email_id=email_id, occurred_at=datetime.now(UTC), recipient="a@example.com"
    )


def test_send_puts_a_confirmed_nservicebus_message_on_the_queue(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    command = send_email()
    with Emailer(rabbitmq_url, endpoint=names["endpoint"], sender="orders") as emailer:
        message_id = emailer.send(command, correlation_id="order-77")
        generated = emailer.send(command)
    with Connection(rabbitmq_url) as conn:
        queue = Queue(names["endpoint"])(conn.channel())
        first, second = queue.get(no_ack=True), queue.get(no_ack=True)
    assert first is not None and second is not None
    headers = first.headers
    assert headers[H.MESSAGE_ID] == message_id == first.properties["message_id"]
    assert headers[H.CORRELATION_ID] == "order-77"
    assert headers[H.ENCLOSED_MESSAGE_TYPES] == "SendEmail" and headers[H.MESSAGE_INTENT] == "Send"
    assert headers[H.ORIGINATING_ENDPOINT] == "orders" and headers[H.TIME_SENT].endswith(" Z")
    assert SendEmail.model_validate_json(first.body) == command
    assert second.headers[H.CORRELATION_ID] == generated  # none given: the message id
    assert second.headers[H.CONVERSATION_ID] != headers[H.CONVERSATION_ID]


def test_send_to_a_queue_that_does_not_exist_fails(rabbitmq_url: str, unique_name: str) -> None:
    with Emailer(rabbitmq_url, endpoint=f"{unique_name}.nowhere") as emailer, pytest.raises(Exception):  # noqa: B017
        emailer.send(send_email())


def test_an_event_published_between_send_and_wait_is_not_missed(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    with Emailer(rabbitmq_url, endpoint=names["endpoint"], events_exchange=names["exchange"]) as emailer:
        with emailer.expect("e-1", EmailDeliveryStarted | EmailDeliveryFailed) as expectation:
            publish_event(rabbitmq_url, names["exchange"], started("other"))  # another email's
            publish_event(rabbitmq_url, names["exchange"], started("e-1"))  # before anyone waits
            event = expectation.wait(timeout=10)
        assert isinstance(event, EmailDeliveryStarted) and event.email_id == "e-1"
        with pytest.raises(WaitTimeout, match="EmailDeliveryStarted"):
            emailer.wait_for("e-2", EmailDeliveryStarted, timeout=0.5)


def test_subscriber_redelivers_on_exception_and_dedupes_by_message_id(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    calls: list[str] = []

    def handle(event: EmailRecipientDelivered) -> None:
        calls.append(event.email_id)
        if calls.count(event.email_id) == 1 and event.email_id == "flaky":
            raise RuntimeError("first try fails")
        if event.email_id == "last":
            subscription.stop()

    emailer = Emailer(rabbitmq_url, events_exchange=names["exchange"])
    with emailer.subscribe(names["sub"], {EmailRecipientDelivered: handle}) as subscription:
        same = publish_event(rabbitmq_url, names["exchange"], delivered("twice"))
        publish_event(rabbitmq_url, names["exchange"], delivered("twice"), message_id=same)
        publish_event(rabbitmq_url, names["exchange"], started("not-subscribed"))
        publish_event(rabbitmq_url, names["exchange"], delivered("flaky"))
        publish_event(rabbitmq_url, names["exchange"], delivered("last"))
        subscription.run()
    assert sorted(calls) == ["flaky", "flaky", "last", "twice"]


def test_a_subscriber_killed_mid_handler_gets_the_event_again_and_its_effect_happens_once(
    rabbitmq_url: str, names: dict[str, str], tmp_path: Path
) -> None:
    args = {
        "bus_url": rabbitmq_url, "exchange": names["exchange"], "queue": names["sub"],
        "store": str(tmp_path / "dedupe.db"), "effects": str(tmp_path / "effects"),
        "started": str(tmp_path / "started"),
    }  # fmt: skip
    script = Path(__file__).with_name("subscriber_process.py")
    env = {**os.environ, "PYTHONPATH": str(CLIENT_SRC)}

    def subscriber(mode: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(script), json.dumps({**args, "mode": mode})],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None and process.stdout.readline().strip() == "subscribed"
        return process

    def lines(name: str) -> list[str]:
        path = tmp_path / name
        return path.read_text().split() if path.exists() else []

    hanging = subscriber("hang")
    message_id = publish_event(rabbitmq_url, names["exchange"], delivered("order-1"))
    wait_until(lambda: lines("started") == ["order-1"], 15, "the handler to start")
    hanging.send_signal(signal.SIGKILL)
    assert hanging.wait(10) == -signal.SIGKILL
    assert lines("effects") == []
    working = subscriber("work")
    try:
        wait_until(lambda: lines("effects") == ["order-1"], 15, "the event to be handled again")
        publish_event(rabbitmq_url, names["exchange"], delivered("order-1"), message_id=message_id)
        publish_event(rabbitmq_url, names["exchange"], delivered("sentinel"))
        wait_until(lambda: "sentinel" in lines("effects"), 15, "the sentinel")
    finally:
        working.kill()
        working.wait(10)
    assert lines("effects") == ["order-1", "sentinel"]
    assert lines("started") == ["order-1", "order-1", "sentinel"]
