"""NServiceBus endpoints with no custom code, per routing topology: the test plays their side with py-amqp.

The sender publishes a PascalCase, NServiceBus-headed SendEmail as the RabbitMQ transport's
topology sends (``tests/nservicebus.py`` says from which documentation); the subscriber declares
and binds as the transport's ``SetupSubscription`` does. Emailer's worker runs with
``EMAILER_TOPOLOGY`` set; the events reach the subscriber in PascalCase with the sender's
correlation id, and Emailer's own subscribers still get theirs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from amqp import Message as AmqpMessage
from kombu.connection import Connection

from contracts.base import Event, message_types
from tests import nservicebus as nsb
from tests.e2e.harness import EventTap, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

WANTED = ("EmailQueued", "EmailDeliveryStarted")
EVENT_TYPES = sorted(n for n, cls in message_types().items() if issubclass(cls, Event))


@dataclass
class Subscriber:
    """An NServiceBus endpoint's input queue, and what arrives on it."""

    conn: Connection
    queue: str
    received: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def poll(self) -> None:
        channel = self.conn.default_channel
        while (message := channel.basic_get(self.queue, no_ack=True)) is not None:
            headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in message.headers.items()}
            self.received.append((headers, dict(message.properties), json.loads(message.body)))

    def got(
        self, type_name: str, email_id: str
    ) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        self.poll()
        return [
            r
            for r in self.received
            if r[0].get("NServiceBus.EnclosedMessageTypes", "").endswith(f".{type_name}")
            and r[2].get("EmailId") == email_id
        ]


@pytest.fixture
def namespace(unique_name: str) -> str:
    return f"Test{unique_name}.Contracts"


@pytest.fixture
def amqp(stack: Stack, namespace: str, unique_name: str) -> Iterator[Connection]:
    with Connection(stack.amqp_url) as conn:
        yield conn
        channel = conn.channel()  # leave nothing of this test on the shared broker
        for name in EVENT_TYPES:
            channel.exchange_delete(f"{namespace}:{name}")
        for name in (stack.topology.input_queue, f"{unique_name}.shop"):
            channel.exchange_delete(name)
            channel.queue_delete(name)


def send_as_nservicebus(conn: Connection, exchange: str, routing_key: str, email_id: str, message_id: str,
                        namespace: str) -> None:  # fmt: skip
    headers = nsb.send_headers(namespace, message_id)
    message = AmqpMessage(
        nsb.send_email_body(email_id), application_headers=headers, **nsb.amqp_properties(headers)
    )
    channel = conn.channel()
    channel.confirm_select()
    channel.basic_publish_confirm(message, exchange=exchange, routing_key=routing_key, mandatory=True)
    channel.close()


def check_events(
    subscriber: Subscriber, tap: EventTap, email_id: str, message_id: str, namespace: str
) -> None:
    for type_name in WANTED:
        found = wait_until(partial(subscriber.got, type_name, email_id), 60, f"{type_name} at the subscriber")
        headers, properties, body = found[0]
        assert headers["NServiceBus.EnclosedMessageTypes"] == f"{namespace}.{type_name}"
        assert properties["type"] == f"{namespace}.{type_name}"
        assert headers["NServiceBus.CorrelationId"] == message_id == properties["correlation_id"]
        assert headers["NServiceBus.MessageIntent"] == "Publish"
        assert body["EmailId"] == email_id and "email_id" not in body and "OccurredAt" in body
        assert body["Metadata"] == {"OrderId": "1234"}
        native = tap.wait_for(type_name, email_id)  # Emailer's own subscribers: the contract's casing
        assert native.body["email_id"] == email_id
        assert (
            native.headers["NServiceBus.MessageId"] == headers["NServiceBus.MessageId"]
        )  # one event, two routes


def test_conventional_topology(
    stack: Stack, tap: EventTap, amqp: Connection, namespace: str, unique_name: str
) -> None:
    stack.start_worker({"EMAILER_TOPOLOGY": "nsb-conventional", "EMAILER_NSB_NAMESPACE": namespace})
    # The subscriber, as ConventionalRoutingTopology.Initialize and SetupSubscription declare it.
    endpoint = f"{unique_name}.shop"
    channel = amqp.default_channel
    channel.queue_declare(endpoint, durable=True, auto_delete=False)
    channel.exchange_declare(endpoint, "fanout", durable=True, auto_delete=False)
    channel.queue_bind(endpoint, endpoint, "")
    for type_name in WANTED:
        exchange = f"{namespace}:{type_name}"
        channel.exchange_declare(exchange, "fanout", durable=True, auto_delete=False)
        for base in ("System:Object", "NServiceBus:IEvent"):
            channel.exchange_declare(base, "fanout", durable=True, auto_delete=False)
            channel.exchange_bind(destination=base, source=exchange, routing_key="")
        channel.exchange_bind(destination=endpoint, source=exchange, routing_key="")
    subscriber = Subscriber(amqp, endpoint)

    email_id, message_id = f"nsb-conv-{unique_name}", str(uuid.uuid4())
    # The sender, as ConventionalRoutingTopology.Send does: to the fanout exchange named after Emailer.
    send_as_nservicebus(amqp, stack.topology.input_queue, "", email_id, message_id, namespace)
    check_events(subscriber, tap, email_id, message_id, namespace)


def test_direct_topology(
    stack: Stack, tap: EventTap, amqp: Connection, namespace: str, unique_name: str
) -> None:
    stack.start_worker({"EMAILER_TOPOLOGY": "nsb-direct", "EMAILER_NSB_NAMESPACE": namespace})
    # The subscriber, as DirectRoutingTopology.Initialize and SetupSubscription declare it.
    endpoint = f"{unique_name}.shop"
    channel = amqp.default_channel
    channel.queue_declare(endpoint, durable=True, auto_delete=False)
    for type_name in WANTED:
        key = f"{namespace}.{type_name}".replace(".", "-")  # DefaultRoutingKeyConvention
        channel.queue_bind(endpoint, "amq.topic", f"{key}.#")
    subscriber = Subscriber(amqp, endpoint)

    email_id, message_id = f"nsb-direct-{unique_name}", str(uuid.uuid4())
    # The sender, as DirectRoutingTopology.Send does: the default exchange, the queue's name.
    send_as_nservicebus(amqp, "", stack.topology.input_queue, email_id, message_id, namespace)
    check_events(subscriber, tap, email_id, message_id, namespace)
