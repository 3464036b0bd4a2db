# mypy: allow-untyped-calls
"""Contract tests for the bus adapter: one suite, run on ``memory://`` and on RabbitMQ.

Every test gets its own queue and exchange names and removes them afterwards.
Waits are bounded polls on a real condition, never a sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from amqp import spec as amqp_spec
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Producer
from sqlalchemy import Engine
from structlog.testing import capture_logs

from emailer.adapters.bus import (
    BusUnavailable,
    Delivery,
    KombuBus,
    PublishFailed,
    PublishNotConfirmed,
    Topology,
)
from emailer.adapters.bus.confirms import ConfirmTimeout, ConfirmTracker
from emailer.adapters.bus.failure import MAX_STACK_TRACE_BYTES, failure_headers
from emailer.retries import PUBLISH
from emailer.signing import FORGED, SIGNATURE_HEADER, Signer
from handlers.ports import OutgoingMessage

WAIT = 20.0  # seconds: the longest any condition below may take to become true (bounded, not a sleep)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("rabbitmq_url")
    return url


@pytest.fixture
def topology(unique_name: str) -> Topology:
    return Topology(
        input_queue=f"{unique_name}.in",
        events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error",
        delays=(0.3, 3.0),
    )


class Broker:
    """The test's own view of the broker: subscriber queues, peeking, foreign senders."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.topology = topology
        self.connection = Connection(url, transport_options={"polling_interval": 0.005})
        self.channel = self.connection.channel()
        self.channel.auto_decode = False  # py-amqp would hand utf-8 bodies back as str
        self.queues = [topology.input_queue, topology.error_queue, *(q.name for q in topology.delay_queues())]

    def subscribe(self, name: str, *routing_keys: str) -> str:
        queue = self.topology.subscriber_queue(name, routing_keys)
        queue.declare(channel=self.channel)
        self.queues.append(name)
        return name

    def get(self, queue: str) -> Message | None:
        """Take one message off ``queue`` (acked), or None if it is empty."""
        message: Message | None = Queue(queue, no_declare=True).bind(self.channel).get(no_ack=True)
        return message

    def wait_get(self, queue: str) -> Message:
        deadline = time.monotonic() + WAIT
        while (message := self.get(queue)) is None:
            assert time.monotonic() < deadline, f"nothing arrived on {queue} within {WAIT}s"
            time.sleep(0.005)
        return message

    def drain_ids(self, queue: str) -> list[str]:
        """Take every message off ``queue``; their message ids, in queue order."""
        ids: list[str] = []
        while (message := self.get(queue)) is not None:
            ids.append(message.properties["message_id"])
        return ids

    def depth(self, queue: str) -> int:
        """Messages ready on ``queue`` (RabbitMQ: not counting unacked ones)."""
        count: int = self.channel.queue_declare(queue=queue, passive=True).message_count
        return count

    def send_raw(self, body: bytes, **kwargs: Any) -> None:
        """Publish as a foreign sender would: only what is given."""
        Producer(self.channel).publish(
            body, exchange="", routing_key=self.topology.input_queue, delivery_mode=2, **kwargs
        )

    def remove_everything(self) -> None:
        for queue in self.queues:
            self.channel.queue_delete(queue)
        self.channel.exchange_delete(self.topology.events_exchange)
        self.connection.release()


@pytest.fixture
def bus(broker_url: str, topology: Topology) -> Iterator[KombuBus]:
    with KombuBus(broker_url, topology, connect_timeout=3) as bus:
        yield bus


@pytest.fixture
def broker(bus: KombuBus, broker_url: str, topology: Topology) -> Iterator[Broker]:
    broker = Broker(broker_url, topology)
    yield broker
    broker.remove_everything()


# -- helpers --------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)


def stop_when(condition: Callable[[], bool], timeout: float = WAIT) -> Callable[[], bool]:
    """A ``should_stop`` that fires when ``condition`` holds, or (then the test fails) late."""
    deadline = time.monotonic() + timeout
    return lambda: condition() or time.monotonic() > deadline


@contextmanager
def consuming(bus: KombuBus, on_batch: Callable[[list[Delivery]], None]) -> Iterator[None]:
    """Run ``bus.consume`` in a thread for the duration of the block."""
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            bus.consume(on_batch, should_stop=stop.is_set, idle_timeout=0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            crashed.append(exc)

    thread = threading.Thread(target=run, name="test-consumer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive(), "consume did not stop"
    assert not crashed, crashed


def collect_all(bus: KombuBus, count: int, settle: str = "ack") -> list[Delivery]:
    """Consume until ``count`` deliveries arrived, then settle each with ``settle``.

    They are settled together once all arrived, so a requeued delivery cannot come
    back among the first ``count``.
    """
    seen: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        seen.extend(batch)
        if len(seen) >= count:
            for delivery in seen:
                getattr(delivery, settle)()

    bus.consume(on_batch, should_stop=stop_when(lambda: len(seen) >= count), idle_timeout=0.05)
    assert len(seen) == count, [d.message_id for d in seen]
    return seen


def outgoing_message(n: int, topology: Topology, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "message_id": f"msg-{n}",
        "message_type": "SendEmail",
        "body": b'{"email_id": "e-%d"}' % n,
        "headers": {"NServiceBus.MessageId": f"msg-{n}"},
        "intent": "Send",
        "destination": topology.input_queue,
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


# -- the contract ---------------------------------------------------------------------


def test_send_lands_on_the_input_queue_intact(bus: KombuBus, broker: Broker) -> None:
    headers = {
        "NServiceBus.MessageId": "m-1",
        "NServiceBus.EnclosedMessageTypes": "SendEmail, Emailer.Contracts;ICommand",
        "NServiceBus.CorrelationId": "corr-1",
        "NServiceBus.ConversationId": "conv-1",
        "NServiceBus.MessageIntent": "Send",
        "NServiceBus.ContentType": "application/json",
        "Custom.Ünïcode": "välue ✓",
    }
    body = '{"email_id": "e-1", "subject": "héllo"}'.encode()
    sent = OutgoingMessage("m-1", "SendEmail", body, headers, "Send", broker.topology.input_queue)
    received: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            delivery.ack()
        received.extend(batch)

    with consuming(bus, on_batch):  # publishing from this thread while another consumes
        bus.publish([sent])
        wait_until(lambda: len(received) == 1)

    (delivery,) = received
    assert delivery.message_id == "m-1"
    assert delivery.message_type == "SendEmail"
    assert delivery.body == body and isinstance(delivery.body, bytes)
    assert delivery.headers == headers
    assert delivery.redelivered is False
    assert delivery.state == "acked"
    assert broker.depth(broker.topology.input_queue) == 0


def test_id_and_type_fall_back_to_amqp_properties(bus: KombuBus, broker: Broker) -> None:
    bus.publish([outgoing_message(1, broker.topology, headers={"X-Only": "this"})])

    (delivery,) = collect_all(bus, 1)

    assert delivery.message_id == "msg-1"
    assert delivery.message_type == "SendEmail"
    assert delivery.headers == {"X-Only": "this"}


def test_headers_win_over_amqp_properties(bus: KombuBus, broker: Broker) -> None:
    broker.send_raw(
        b"{}",
        content_type="application/json",
        content_encoding="utf-8",
        message_id="amqp-id",
        type="AmqpType",
        headers={
            "NServiceBus.MessageId": "nsb-id",
            "NServiceBus.EnclosedMessageTypes": "Emailer.SendEmail, Emailer.Contracts, Version=1;ICommand",
        },
    )

    (delivery,) = collect_all(bus, 1)

    # The type name is parsed once, by contracts.wire.type_name: the bare name.
    assert (delivery.message_id, delivery.message_type) == ("nsb-id", "SendEmail")


def test_publish_reaches_subscribers_bound_to_its_type(bus: KombuBus, broker: Broker) -> None:
    exact = broker.subscribe(f"{broker.topology.input_queue}.exact", "EmailQueued")
    everything = broker.subscribe(f"{broker.topology.input_queue}.all", "#")
    other = broker.subscribe(f"{broker.topology.input_queue}.other", "EmailCancelled")
    event = OutgoingMessage(
        "ev-1",
        "EmailQueued",
        b'{"email_id": "e-1"}',
        {"NServiceBus.MessageId": "ev-1", "NServiceBus.MessageIntent": "Publish"},
        "Publish",
        "EmailQueued",
    )

    bus.publish([event])  # confirmed: routing is done once this returns

    for queue in (exact, everything):
        message = broker.wait_get(queue)
        assert message.body == event.body
        assert message.headers["NServiceBus.MessageId"] == "ev-1"
        assert message.properties["message_id"] == "ev-1"
        assert message.properties["type"] == "EmailQueued"
        assert broker.get(queue) is None
    assert broker.get(other) is None
    assert broker.depth(broker.topology.input_queue) == 0


def test_a_batch_of_500_is_published_in_one_call(bus: KombuBus, broker: Broker) -> None:
    subscriber = broker.subscribe(f"{broker.topology.input_queue}.all", "#")
    events = [
        outgoing_message(
            n, broker.topology, message_type="EmailQueued", intent="Publish", destination="EmailQueued"
        )
        for n in range(500)
    ]

    bus.publish(events)  # returns once all 500 are confirmed

    assert broker.depth(subscriber) == 500
    assert sorted(broker.drain_ids(subscriber)) == sorted(f"msg-{n}" for n in range(500))


def test_batches_respect_max_batch_and_unacked_come_again(bus: KombuBus, broker: Broker) -> None:
    bus.publish([outgoing_message(n, broker.topology) for n in range(30)])
    held_back = {"msg-0", "msg-10", "msg-20"}
    batches: list[list[Delivery]] = []

    def on_batch(batch: list[Delivery]) -> None:
        batches.append(batch)
        for delivery in batch:
            if delivery.message_id not in held_back:
                delivery.ack()

    seen = lambda: sum(len(batch) for batch in batches)  # noqa: E731
    bus.consume(
        on_batch,
        prefetch=10,
        max_batch=10,
        should_stop=stop_when(lambda: seen() >= 30),
        idle_timeout=0.05,
    )

    ids = [delivery.message_id for batch in batches for delivery in batch]
    assert sorted(ids) == sorted(f"msg-{n}" for n in range(30))  # all, each once
    assert max(len(batch) for batch in batches) <= 10
    assert not any(delivery.redelivered for batch in batches for delivery in batch)

    again = collect_all(bus, 3)
    assert {delivery.message_id for delivery in again} == held_back
    assert all(delivery.redelivered for delivery in again)
    assert broker.depth(broker.topology.input_queue) == 0


def test_a_failing_on_batch_loses_nothing(bus: KombuBus, broker: Broker) -> None:
    bus.publish([outgoing_message(n, broker.topology) for n in range(5)])
    failed_batch: list[Delivery] = []
    later: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        if not failed_batch:
            failed_batch.extend(batch)
            batch[0].ack()  # settled before the failure: must not come again
            raise OSError("disk full")  # a handler error, not a lost broker connection
        for delivery in batch:
            delivery.ack()
        later.extend(batch)

    all_acked = lambda: len(failed_batch) >= 1 and len(later) >= 5 - 1  # noqa: E731
    bus.consume(on_batch, should_stop=stop_when(all_acked), idle_timeout=0.05)

    assert failed_batch[0].state == "acked"
    assert all(d.state == "requeued" for d in failed_batch[1:])
    assert sorted(d.message_id for d in [failed_batch[0], *later]) == [f"msg-{n}" for n in range(5)]
    again = {d.message_id for d in later if d.redelivered}
    assert again == {d.message_id for d in failed_batch[1:]}
    assert broker.depth(broker.topology.input_queue) == 0


def test_send_to_error_moves_the_message_with_failure_headers(bus: KombuBus, broker: Broker) -> None:
    sent = outgoing_message(
        1,
        broker.topology,
        headers={"NServiceBus.MessageId": "msg-1", "NServiceBus.CorrelationId": "corr-9"},
    )
    bus.publish([sent])

    handled: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            try:
                raise ValueError("no recipients")
            except ValueError as exc:
                bus.send_to_error(
                    delivery, "invalid SendEmail: no recipients", exc, {"NServiceBus.Retries": "0"}
                )
        handled.extend(batch)

    bus.consume(on_batch, should_stop=stop_when(lambda: bool(handled)), idle_timeout=0.05)

    assert [d.state for d in handled] == ["acked"]

    failed = broker.wait_get(broker.topology.error_queue)
    headers = failed.headers
    assert failed.body == sent.body
    assert failed.properties["message_id"] == "msg-1"
    assert failed.properties["correlation_id"] == "corr-9"
    assert headers["NServiceBus.MessageId"] == "msg-1"
    assert headers["NServiceBus.CorrelationId"] == "corr-9"
    assert headers["NServiceBus.FailedQ"] == broker.topology.input_queue
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{6} Z", headers["NServiceBus.TimeOfFailure"])
    assert headers["NServiceBus.ExceptionInfo.ExceptionType"] == "ValueError"
    assert headers["NServiceBus.ExceptionInfo.Message"] == "invalid SendEmail: no recipients"
    assert headers["NServiceBus.ExceptionInfo.Source"] == "emailer"
    assert "ValueError: no recipients" in headers["NServiceBus.ExceptionInfo.StackTrace"]
    assert headers["NServiceBus.ProcessingEndpoint"] == "emailer"
    assert headers["NServiceBus.Retries"] == "0"
    assert broker.depth(broker.topology.input_queue) == 0


def test_the_error_copy_keeps_a_foreign_content_type(bus: KombuBus, broker: Broker) -> None:
    broker.send_raw(
        b"<SendEmail/>",
        content_type="application/xml",
        content_encoding="utf-8",
        headers={"NServiceBus.MessageId": "x-1", "NServiceBus.EnclosedMessageTypes": "SendEmail"},
    )
    handled: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            bus.send_to_error(delivery, "not JSON")
        handled.extend(batch)

    bus.consume(on_batch, should_stop=stop_when(lambda: bool(handled)), idle_timeout=0.05)

    failed = broker.wait_get(broker.topology.error_queue)
    assert failed.body == b"<SendEmail/>" and failed.content_type == "application/xml"
    assert failed.properties["message_id"] == "x-1"
    assert failed.headers["NServiceBus.ExceptionInfo.Message"] == "not JSON"


def test_a_flaky_connection_is_retried_by_the_publish_policy(
    bus: KombuBus, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    publishing = bus._publishing
    real_attempt = publishing._publish_once
    outages = [ConnectionResetError("connection reset by peer"), ConnectionResetError("again")]

    def flaky(batch: Any, timestamp: int) -> None:
        if outages:
            raise outages.pop(0)
        real_attempt(batch, timestamp)

    monkeypatch.setattr(publishing, "_publish_once", flaky)
    with capture_logs() as logs:
        bus.publish([outgoing_message(1, broker.topology)])  # reconnects twice, then confirmed

    assert [e["attempt"] for e in logs if e["event"] == "bus.publish_retry"] == [1, 2]
    assert broker.drain_ids(broker.topology.input_queue) == ["msg-1"]


def test_message_id_falls_back_to_a_body_hash_stable_on_redelivery(bus: KombuBus, broker: Broker) -> None:
    body = b'{"from": "a sender that sets no message id"}'
    broker.send_raw(body, content_type="application/json", content_encoding="utf-8")

    (first,) = collect_all(bus, 1, settle="requeue")
    (second,) = collect_all(bus, 1)

    assert first.message_id == second.message_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert first.message_type is None
    assert (first.redelivered, second.redelivered) == (False, True)


def test_bodies_are_delivered_raw_never_decoded_or_auto_acked(bus: KombuBus, broker: Broker) -> None:
    bodies = [b"\xff\xfe not even utf-8", b"plain text, not json", b"\x1f\x8b broken"]
    broker.send_raw(bodies[0], content_type="application/json", content_encoding="utf-8")
    broker.send_raw(bodies[1], content_type="application/json", content_encoding="utf-8")
    broker.send_raw(
        bodies[2],
        content_type="application/json",
        content_encoding="binary",
        headers={"compression": "application/x-no-such-codec"},
    )

    first = collect_all(bus, 3, settle="requeue")  # nothing was acked behind our back...
    second = collect_all(bus, 3)  # ...so all three come again

    for round_ in (first, second):
        assert sorted(d.body for d in round_) == sorted(bodies)
        assert all(isinstance(d.body, bytes) for d in round_)
    assert all(d.redelivered for d in second)
    assert broker.depth(broker.topology.input_queue) == 0


@pytest.mark.rabbitmq
def test_odd_headers_and_a_body_over_several_frames_arrive_as_py_amqp_reads_them(
    rabbitmq_url: str, topology: Topology
) -> None:
    """What the consumer reads from the frames itself, or leaves to py-amqp, equals py-amqp's reading."""
    odd = {
        "NServiceBus.MessageId": "odd-1",
        "NServiceBus.EnclosedMessageTypes": "SendEmail",
        "count": 3,
        "nested": {"list": [1, "two", Decimal("3.25")], "flag": True},
        "when": datetime(2026, 1, 2, 3, 4, 5),
        "raw": b"\x00\xff",
        "none": None,
    }
    usual = {"NServiceBus.MessageId": "usual-1", "Custom.\u00dcn\u00efcode": "v\u00e4lue \u2713"}
    big = bytes(range(256)) * 1600  # 400 KB: four body frames of RabbitMQ's 128 KiB
    # An empty body left to kombu (a compression header) comes as '' with kombu's "binary" encoding.
    empty = {"NServiceBus.MessageId": "empty-1", "compression": "application/x-no-such-codec"}
    sent = [(b"odd", odd), (big, usual), (b"", empty)]
    with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus:
        broker = Broker(rabbitmq_url, topology)
        oracle = broker.subscribe(f"{topology.input_queue}.oracle", "Nothing")  # the same, read by py-amqp
        try:
            for body, headers in sent:
                for queue in (topology.input_queue, oracle):
                    Producer(broker.channel).publish(
                        body, exchange="", routing_key=queue, headers=headers, message_id="p-1", type="T"
                    )
            first = collect_all(bus, 3, settle="requeue")
            again = collect_all(bus, 3)
            expected = []
            for _ in sent:
                message = broker.channel.basic_get(oracle, no_ack=True)  # py-amqp's own reading, no kombu
                properties = message.properties
                expected.append(
                    Delivery.from_transport(
                        headers=properties.get("application_headers"),
                        properties=properties,
                        body=message.body or b"",  # py-amqp: an empty body is ''
                        redelivered=False,
                    )
                )
        finally:
            broker.remove_everything()

    def seen(delivery: Delivery) -> tuple[object, ...]:
        return (delivery.message_id, delivery.message_type, delivery.headers, delivery.body)

    assert [seen(d) for d in first] == [seen(d) for d in expected] == [seen(d) for d in again]
    assert first[1].body == big and first[2].body == b""
    assert first[0].headers["count"] == "3" and first[0].headers["none"] == "None"
    assert not any(d.redelivered for d in first) and all(d.redelivered for d in again)
    assert [d.state for d in again] == ["acked"] * 3


def test_ping(bus: KombuBus, broker: Broker) -> None:
    assert bus.ping() is True


# -- not transport-specific -----------------------------------------------------------


def test_an_unreachable_broker_is_reported_without_the_password() -> None:
    bus = KombuBus("amqp://guest:s3cret@127.0.0.1:1//", Topology(), connect_timeout=1)

    with pytest.raises(BusUnavailable) as caught:
        bus.connect(max_retries=0)

    assert "s3cret" not in str(caught.value) and "s3cret" not in caught.value.url
    assert "127.0.0.1:1" in str(caught.value)
    assert bus.ping(timeout=1) is False


def test_the_stack_trace_header_is_capped_at_16_kb() -> None:
    error: BaseException | None = None
    for n in range(400):  # a long chain of causes: a long trace (a long message is cut anyway)
        try:
            raise ValueError(f"step {n}") from error
        except ValueError as exc:
            error = exc
    assert error is not None
    headers = failure_headers(failed_queue="q", reason="r", exc=error, now=datetime.now(UTC))

    trace = headers["NServiceBus.ExceptionInfo.StackTrace"]
    assert len(trace.encode()) <= MAX_STACK_TRACE_BYTES
    assert trace.startswith("...(truncated)")


# -- RabbitMQ only: surviving a dropped connection ------------------------------------


@pytest.mark.rabbitmq
def test_consumer_and_publisher_survive_a_dropped_connection(rabbitmq_url: str, topology: Topology) -> None:
    broker = Broker(rabbitmq_url, topology)
    received: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            delivery.ack()
        received.extend(batch)

    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus, consuming(bus, on_batch):
            bus.publish([outgoing_message(1, topology)])
            wait_until(lambda: len(received) == 1)

            _drop(bus._consumer)  # the broker going away, as the consumer sees it
            _drop(bus._publisher)
            bus.publish([outgoing_message(2, topology)])  # reconnects, then confirmed
            wait_until(lambda: len(received) == 2)
    finally:
        broker.remove_everything()

    assert [d.message_id for d in received] == ["msg-1", "msg-2"]


def _drop(connection: Connection) -> None:
    connection.connection.sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.rabbitmq
def test_a_send_rabbitmq_cannot_route_raises(rabbitmq_url: str, topology: Topology) -> None:
    broker = Broker(rabbitmq_url, topology)
    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus:
            with pytest.raises(PublishFailed, match="unroutable"):
                bus.publish([outgoing_message(1, topology, destination=f"{topology.input_queue}.nowhere")])
            bus.publish([outgoing_message(2, topology)])  # the channel is still usable, confirms in step
            assert broker.wait_get(topology.input_queue).properties["message_id"] == "msg-2"
            assert broker.get(topology.input_queue) is None
    finally:
        broker.remove_everything()


@pytest.mark.rabbitmq
def test_an_unroutable_send_fails_its_batch_but_the_rest_of_it_arrives(
    rabbitmq_url: str, topology: Topology
) -> None:
    broker = Broker(rabbitmq_url, topology)
    nowhere = outgoing_message(99, topology, destination=f"{topology.input_queue}.nowhere")
    batch = [outgoing_message(n, topology) for n in range(10)]
    batch.insert(5, nowhere)
    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus:
            with pytest.raises(PublishFailed, match="unroutable") as caught:
                bus.publish(batch)
            assert type(caught.value) is PublishFailed  # returned, not nacked
            assert f"1 message(s) returned unroutable: msg-99 to (default)/{nowhere.destination}" in str(
                caught.value
            )

            # Raised only once the whole batch was answered: the others are all on the bus.
            assert sorted(broker.drain_ids(topology.input_queue)) == sorted(f"msg-{n}" for n in range(10))

            bus.publish([outgoing_message(10, topology)])  # the channel is still usable, confirms in step
            assert broker.drain_ids(topology.input_queue) == ["msg-10"]
    finally:
        broker.remove_everything()


@pytest.mark.rabbitmq
def test_a_refused_publish_fails_the_batch_and_the_next_one_goes_through(
    rabbitmq_url: str, topology: Topology
) -> None:
    broker = Broker(rabbitmq_url, topology)
    event = outgoing_message(
        1, topology, message_type="EmailQueued", intent="Publish", destination="EmailQueued"
    )
    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus:
            broker.channel.exchange_delete(topology.events_exchange)  # the broker closes the channel

            with pytest.raises(PublishFailed, match="refused"):
                bus.publish([event, outgoing_message(2, topology)])

            bus.publish([outgoing_message(3, topology)])  # on a new channel, in confirm mode again
            assert broker.drain_ids(topology.input_queue) == ["msg-3"]
    finally:
        broker.remove_everything()


@pytest.mark.rabbitmq
def test_a_connection_dropped_mid_batch_republishes_the_whole_batch(
    rabbitmq_url: str, topology: Topology
) -> None:
    broker = Broker(rabbitmq_url, topology)
    size = 1000
    # ~8 KB bodies: the batch is ~8 MB, written in 64 KiB pieces (coalesce.py), so the broker has
    # confirmed its beginning long before the end is written: the first confirm read covers only
    # part of the batch. (With tiny bodies the whole batch could arrive before the broker's first
    # confirm, and then there is no "mid-batch" to drop at.)
    padding = b"x" * 8000
    batch = [
        outgoing_message(n, topology, body=b'{"email_id": "e-%d", "pad": "%s"}' % (n, padding))
        for n in range(size)
    ]
    dropped_at: list[int] = []
    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=3) as bus:
            first_channel = bus._publishing._channel

            def drop_once(delivery_tag: int, multiple: bool) -> None:
                # The broker confirmed part of the batch and the rest is still in flight: drop at the
                # first confirm that does not cover the whole batch (one ack may confirm many at once).
                if delivery_tag < size and not dropped_at:
                    dropped_at.append(delivery_tag)
                    _drop(bus._publisher)

            first_channel.events["basic_ack"].add(drop_once)
            # The publisher can write the whole 8 MB into the socket's buffers before the broker
            # confirms its beginning (on a busy machine it did), leaving no mid-batch to drop at.
            # So on the first connection, after each write, wait (bounded) for the broker's next
            # answer: its first confirm then comes while the rest of the batch is still unwritten.
            connection = first_channel.connection
            sendall = vars(connection.transport)["_write"]

            def write_then_read_an_answer(data: bytes) -> None:
                sendall(data)
                if not dropped_at:
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=5)

            connection.transport._write = write_then_read_an_answer
            bus.publish(batch)  # reconnects, publishes the batch again, confirmed

            assert dropped_at, "the connection was not dropped"
            assert bus._publishing._channel is not first_channel
            ids = broker.drain_ids(topology.input_queue)
    finally:
        broker.remove_everything()

    assert set(ids) == {f"msg-{n}" for n in range(size)}  # every message, at least once
    # As documented, the whole batch went again: what was confirmed before the drop
    # is there twice (delivery tag n is the n-th publish on the first channel).
    assert ids.count(f"msg-{dropped_at[0] - 1}") == 2
    assert max(ids.count(id_) for id_ in set(ids)) == 2


@pytest.mark.rabbitmq
def test_a_broker_gone_for_good_raises_bus_unavailable_after_the_retries(
    rabbitmq_url: str, topology: Topology
) -> None:
    broker = Broker(rabbitmq_url, topology)
    try:
        with KombuBus(rabbitmq_url, topology, connect_timeout=1) as bus:
            bus._publisher.port = 1  # where the publisher reconnects to: nothing listens there
            _drop(bus._publisher)

            with capture_logs() as logs, pytest.raises(BusUnavailable) as caught:
                bus.publish([outgoing_message(n, topology) for n in range(10)])

            assert "guest:guest" not in str(caught.value)
            retries = [e for e in logs if e["event"] == "bus.publish_retry"]
            assert [e["attempt"] for e in retries] == list(range(1, PUBLISH.attempts))  # then it gave up
    finally:
        broker.remove_everything()


# -- the confirm tracker, without a broker --------------------------------------------


Answer = tuple[Any, ...]  # (event, *arguments py-amqp passes to its callbacks)


class FakeChannel:
    """The few parts of a py-amqp channel ``ConfirmTracker`` uses; plays the broker too.

    ``answers`` are what the broker sends, one per ``drain_events`` (py-amqp reads
    one method per call); with none left, ``drain_events`` times out.
    """

    def __init__(self) -> None:
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.confirm_selected = 0
        self.published: list[tuple[Any, str, str, bool]] = []
        self.answers: list[Answer] = []
        self.connection = self

    def confirm_select(self) -> None:
        self.confirm_selected += 1

    def send_method(self, sig: Any, argsig: str, args: tuple[Any, ...], content: Any) -> None:
        assert (sig, argsig) == (amqp_spec.Basic.Publish, "Bssbb")  # what py-amqp's basic_publish sends
        _ticket, exchange, routing_key, mandatory, immediate = args
        assert not immediate
        self.published.append((content, exchange, routing_key, mandatory))

    def drain_events(self, timeout: float) -> None:
        if not self.answers:
            time.sleep(min(timeout, 0.01))
            raise TimeoutError
        self.send(self.answers.pop(0))

    def send(self, answer: Answer) -> None:
        event, *arguments = answer
        for callback in list(self.events[event]):
            callback(*arguments)


def ack(tag: int, multiple: bool = False) -> Answer:
    return ("basic_ack", tag, multiple)


def nack(tag: int, multiple: bool = False) -> Answer:
    return ("basic_nack", tag, multiple)


def returned(message_id: str, routing_key: str) -> Answer:
    message = SimpleNamespace(properties={"message_id": message_id})
    return ("basic_return", RuntimeError("Basic.return: (312) NO_ROUTE"), "", routing_key, message)


def publish_fake(tracker: ConfirmTracker, *numbers: int) -> None:
    for n in numbers:
        tracker.publish(f"body-{n}", label=f"msg-{n}", exchange="", routing_key="q", mandatory=True)


def test_the_tracker_selects_confirms_and_waits_for_acks_in_any_order() -> None:
    channel = FakeChannel()
    tracker = ConfirmTracker(channel)
    assert channel.confirm_selected == 1

    publish_fake(tracker, 1, 2, 3)
    channel.answers = [ack(2), ack(3), ack(1)]
    tracker.wait(timeout=1)

    assert tracker.unconfirmed == 0 and not channel.answers
    assert [routing_key for _, _, routing_key, _ in channel.published] == ["q", "q", "q"]


def test_the_tracker_honours_multiple_and_acks_taken_in_while_publishing() -> None:
    channel = FakeChannel()
    tracker = ConfirmTracker(channel)

    publish_fake(tracker, 1, 2, 3)
    channel.send(ack(2, multiple=True))  # read by a poll between two batches
    assert tracker.unconfirmed == 1
    publish_fake(tracker, 4, 5)
    channel.answers = [ack(4), ack(5, multiple=True)]
    tracker.wait(timeout=1)

    assert tracker.unconfirmed == 0 and not channel.answers


def test_the_tracker_reports_nacks_once_the_whole_batch_was_answered() -> None:
    channel = FakeChannel()
    tracker = ConfirmTracker(channel)

    publish_fake(tracker, 1, 2, 3, 4)
    channel.answers = [ack(1), nack(3, multiple=True), ack(4)]
    with pytest.raises(PublishNotConfirmed) as caught:
        tracker.wait(timeout=1)

    assert not channel.answers  # it waited for tag 4 before raising
    message = str(caught.value)
    assert "msg-2" in message and "msg-3" in message
    assert "msg-1" not in message and "msg-4" not in message

    # Reported once: the next batch on the same channel goes on at tag 5, clean.
    publish_fake(tracker, 5)
    channel.answers = [ack(5)]
    tracker.wait(timeout=1)


def test_the_tracker_reports_a_return_matched_by_message_id() -> None:
    channel = FakeChannel()
    tracker = ConfirmTracker(channel)

    publish_fake(tracker, 1, 2)
    # RabbitMQ: basic.return first, then the basic.ack for the same message.
    channel.answers = [returned("msg-2", "nowhere"), ack(2, multiple=True)]
    with pytest.raises(PublishFailed, match="unroutable") as caught:
        tracker.wait(timeout=1)

    assert type(caught.value) is PublishFailed
    assert "msg-2 to (default)/nowhere" in str(caught.value)
    assert tracker.unconfirmed == 0


def test_the_tracker_times_out_on_missing_confirms_and_detaches() -> None:
    channel = FakeChannel()
    tracker = ConfirmTracker(channel)

    publish_fake(tracker, 1, 2)
    channel.answers = [ack(1)]
    with pytest.raises(ConfirmTimeout, match="1 message.*msg-2"):
        tracker.wait(timeout=0.05)

    tracker.detach()
    assert not any(channel.events.values())


# -- poison messages: moving to the error queue never fails because of content ---------

LONG_ID = "poison-" + "x" * 293  # 300 characters: no AMQP short string can hold it
NON_ASCII_ID = "ü" * 200  # 200 characters, 400 bytes of UTF-8


def _poison_headers(broker_url: str) -> list[tuple[str, dict[str, Any]]]:
    """(what, headers) of messages that each once made the error-queue publish fail."""
    # RabbitMQ refuses a content header larger than its frame (128 KiB): the sender's
    # headers must fit; with the failure headers added, they no longer would.
    memory = broker_url == "memory://"
    huge = 200_000 if memory else 125_000
    name = "X-" + "n" * (298 if memory else 253)  # no AMQP sender can set a longer one
    return [
        ("a 300-character message id", {"NServiceBus.MessageId": LONG_ID}),
        ("a non-ASCII message id", {"NServiceBus.MessageId": NON_ASCII_ID}),
        ("no message id, one huge header", {"X-Huge": "h" * huge}),
        ("a header table near the frame limit", {f"X-Many-{n}": "m" * 100 for n in range(huge // 120)}),
        ("a header name at or past 255 bytes", {name: "v", "NServiceBus.MessageId": "named"}),
        ("binary and nested headers", {"X-Bin": b"\xff\x00\xfe", "X-Nested": {"a": {"b": [1, "two"]}}}),
    ]


@pytest.mark.parametrize("case", range(6))
def test_send_to_error_never_fails_because_of_what_the_message_carries(
    bus: KombuBus, broker: Broker, broker_url: str, case: int
) -> None:
    what, headers = _poison_headers(broker_url)[case]
    body = b'{"not": "a SendEmail"}'
    broker.send_raw(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"NServiceBus.EnclosedMessageTypes": "SendEmail", **headers},
    )
    handled: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            try:
                raise ValueError("boom " + "r" * 5000)  # a long reason is bounded too
            except ValueError as exc:
                bus.send_to_error(delivery, str(exc), exc)
        handled.extend(batch)

    bus.consume(on_batch, should_stop=stop_when(lambda: bool(handled)), idle_timeout=0.05)

    assert [d.state for d in handled] == ["acked"], what
    failed = broker.wait_get(broker.topology.error_queue)
    assert failed.body == body  # the body is what a replay sends back: untouched
    assert failed.headers["NServiceBus.FailedQ"] == broker.topology.input_queue
    assert failed.headers["NServiceBus.ExceptionInfo.Message"].startswith("boom rrr")
    assert len(failed.properties["message_id"].encode()) <= 255
    delivered_id = handled[0].message_id
    if len(delivered_id.encode()) > 255:  # the property holds its hash, the header the id itself
        assert (
            failed.properties["message_id"] == "sha256:" + hashlib.sha256(delivered_id.encode()).hexdigest()
        )
        assert failed.headers["NServiceBus.MessageId"] == delivered_id
    assert broker.depth(broker.topology.input_queue) == 0


def test_a_cut_header_is_named_and_keeps_its_size_and_hash(bus: KombuBus, broker: Broker) -> None:
    value = "h" * 200_000
    delivery = Delivery("m-1", "SendEmail", {"X-Huge": value, "X-Small": "kept"}, b"{}", False)

    bus.send_to_error(delivery, "invalid SendEmail")

    failed = broker.wait_get(broker.topology.error_queue)
    assert failed.headers["Emailer.TruncatedHeaders"] == "X-Huge"
    assert failed.headers["X-Small"] == "kept"
    cut = failed.headers["X-Huge"]
    assert len(cut) < 1000 and "200000 bytes" in cut and hashlib.sha256(value.encode()).hexdigest() in cut


@pytest.mark.rabbitmq
def test_an_error_queue_that_refuses_the_copy_raises_and_the_message_stays(
    rabbitmq_url: str, topology: Topology
) -> None:
    nowhere = Topology(topology.input_queue, topology.events_exchange, f"{topology.error_queue}.missing")
    broker = Broker(rabbitmq_url, topology)
    broker.queues.append(nowhere.error_queue)
    try:
        with KombuBus(rabbitmq_url, nowhere, connect_timeout=3) as bus:
            broker.channel.queue_delete(nowhere.error_queue)  # the error queue is gone
            broker.send_raw(b"{}", headers={"NServiceBus.MessageId": "m-1"})
            raised: list[BaseException] = []

            def on_batch(batch: list[Delivery]) -> None:
                for delivery in batch:
                    try:
                        bus.send_to_error(delivery, "invalid")
                    except Exception as exc:  # noqa: BLE001 - what the test looks at
                        raised.append(exc)
                        delivery.requeue()

            bus.consume(on_batch, should_stop=stop_when(lambda: bool(raised)), idle_timeout=0.05)
            assert isinstance(raised[0], PublishFailed)  # the minimal copy was refused too
            kept = broker.wait_get(topology.input_queue)  # still there, not lost
            assert kept.headers["NServiceBus.MessageId"] == "m-1"
    finally:
        broker.remove_everything()


# -- the pipeline over the bus: a poison message costs only itself ----------------------


def _pipeline(
    bus: KombuBus,
    engine: Engine,
    handler: Callable[[Any, Any], None] | None = None,
    signer: Signer | None = None,
    dispatched: list[str] | None = None,
) -> Any:
    from contracts import DispatchEmail, RecordDeliveryReports, SendEmail
    from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
    from emailer.domain import RetryPolicy
    from emailer.endpoint.pipeline import MessagePipeline
    from emailer.endpoint.recoverability import RecoverabilityPolicy
    from emailer.endpoint.registry import Registry, Route
    from handlers.record_delivery_reports import record_delivery_reports
    from handlers.send_email import send_email
    from tests.fakes import FakeBlobStore, FakeClock, FakeRelay

    clock, blobs = FakeClock(), FakeBlobStore()
    seen = dispatched if dispatched is not None else []
    registry = Registry(
        [
            Route(SendEmail, handler or (lambda m, uow: send_email(m, uow, blobs, clock, RetryPolicy()))),
            Route(RecordDeliveryReports, lambda m, uow: record_delivery_reports(m, uow, clock)),
            Route(DispatchEmail, lambda m, uow: seen.append(m.email_id), transactional=False),
        ]
    )
    input_queue = bus.topology.input_queue
    return MessagePipeline(
        registry,
        lambda: SqlUnitOfWork(engine, clock, input_queue, signer=signer),
        FakeRelay(),
        bus,
        signer=signer,
        # Short: every retry of the suite's failing handlers is spent within a second or so.
        recoverability=RecoverabilityPolicy(immediate_retries=2, delays=(0.3,)),
    )


def _stored(engine: Engine) -> set[str]:
    from sqlalchemy import select

    from emailer.adapters.persistence.tables import emails

    with engine.connect() as conn:
        return {row[0] for row in conn.execute(select(emails.c.id))}


def test_a_batch_with_poison_messages_stores_every_valid_one(
    bus: KombuBus, broker: Broker, broker_url: str, engine: Engine
) -> None:
    from tests.factories import send_email_payload

    poison = _poison_headers(broker_url)
    valid = {f"valid-{n}": f"m-valid-{n}" for n in range(5)}
    valid["valid-long-id"] = "m-" + "l" * 298  # a valid command whose id no inbox column holds
    for what, headers in poison:
        broker.send_raw(
            b'{"subject": "no recipients"}',
            content_type="application/json",
            content_encoding="utf-8",
            headers={"NServiceBus.EnclosedMessageTypes": "SendEmail", "X-What": what, **headers},
        )
    for email_id, message_id in valid.items():
        broker.send_raw(
            json.dumps(send_email_payload(email_id=email_id)).encode(),
            content_type="application/json",
            content_encoding="utf-8",
            headers={"NServiceBus.EnclosedMessageTypes": "SendEmail", "NServiceBus.MessageId": message_id},
        )
    pipeline = _pipeline(bus, engine)
    moved: list[Message] = []

    def done() -> bool:
        while (message := broker.get(broker.topology.error_queue)) is not None:
            moved.append(message)
        return len(moved) >= len(poison) and _stored(engine) == set(valid)

    bus.consume(
        pipeline.handle_batch, prefetch=50, max_batch=50, should_stop=stop_when(done), idle_timeout=0.05
    )

    assert _stored(engine) == set(valid)
    assert sorted(m.headers["X-What"] for m in moved) == sorted(what for what, _ in poison)
    for message in moved:
        assert message.headers["NServiceBus.ExceptionInfo.Message"].startswith("invalid SendEmail: ")
    assert broker.depth(broker.topology.input_queue) == 0


# -- exceptions reach logs and error headers without the statement's parameters --------

MARKER = "SECRET-MARKER-7f3a"


def test_a_database_error_leaks_no_parameters_into_logs_or_error_headers(
    bus: KombuBus, broker: Broker, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog
    from sqlalchemy import Column, MetaData, Table, Text, create_engine, insert

    from emailer.entrypoints.logging import configure
    from tests.factories import send_email_payload

    # On PostgreSQL the driver's DETAIL line quotes the duplicate key too. (SQLite: an
    # engine of its own, a second writer on the unit of work's file would wait for its lock.)
    probe_engine = engine if engine.dialect.name == "postgresql" else create_engine("sqlite://")
    name = f"leak_probe_{broker.topology.input_queue.split('.')[0]}"
    probe = Table(name, MetaData(), Column("k", Text, primary_key=True))
    probe.create(probe_engine)

    def handler(message: Any, uow: Any) -> None:
        with probe_engine.begin() as conn:  # a unique violation whose parameter is the marker
            conn.execute(insert(probe), [{"k": MARKER}, {"k": MARKER}])

    broker.send_raw(
        json.dumps(send_email_payload(email_id="leaky")).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers={"NServiceBus.EnclosedMessageTypes": "SendEmail", "NServiceBus.MessageId": "m-leaky"},
    )
    configure("DEBUG", "json")
    moved: list[Message] = []
    try:

        def done() -> bool:
            if (message := broker.get(broker.topology.error_queue)) is not None:
                moved.append(message)
            return bool(moved)

        bus.consume(
            _pipeline(bus, engine, handler).handle_batch, should_stop=stop_when(done), idle_timeout=0.05
        )
    finally:
        structlog.reset_defaults()
        probe.drop(probe_engine)

    logged = capsys.readouterr().err
    [failed] = moved
    assert "IntegrityError" in failed.headers["NServiceBus.ExceptionInfo.ExceptionType"]
    assert "IntegrityError" in logged and "pipeline.moved_to_error_queue" in logged
    assert MARKER not in logged
    assert not [name for name, value in failed.headers.items() if MARKER in str(value)]


# -- internal commands are accepted only from Emailer itself ----------------------------


def test_internal_commands_are_accepted_only_with_emailers_signature(
    bus: KombuBus, broker: Broker, engine: Engine
) -> None:
    from sqlalchemy import select

    from emailer.adapters.persistence.tables import provider_events, timeline
    from tests.factories import send_email_payload

    signer, dispatched = Signer.generated(), list[str]()
    pipeline = _pipeline(bus, engine, signer=signer, dispatched=dispatched)

    def send(message_id: str, message_type: str, payload: dict[str, Any], key: Signer | None) -> None:
        body = json.dumps(payload).encode()
        headers = {"NServiceBus.MessageId": message_id, "NServiceBus.EnclosedMessageTypes": message_type}
        if key is not None:
            headers[SIGNATURE_HEADER] = key.sign(message_id, message_type, body)
        broker.send_raw(body, content_type="application/json", content_encoding="utf-8", headers=headers)

    def report(event_id: str) -> dict[str, Any]:
        return {
            "reports": [
                {
                    "provider": "sendgrid", "provider_event_id": event_id, "email_id": "e-1",
                    "recipient": "ann@example.com", "kind": "bounced", "reason": f"reason of {event_id}",
                    "occurred_at": "2026-01-01T12:00:00Z",
                }
            ]
        }  # fmt: skip

    def timeline_of(email_id: str) -> list[str]:
        with engine.connect() as conn:
            return [
                r[0] for r in conn.execute(select(timeline.c.kind).where(timeline.c.email_id == email_id))
            ]

    send("m-send", "SendEmail", send_email_payload(email_id="e-1"), None)  # public: no signature needed
    bus.consume(
        pipeline.handle_batch, should_stop=stop_when(lambda: _stored(engine) == {"e-1"}), idle_timeout=0.05
    )
    accepted = timeline_of("e-1")

    send("m-forged", "RecordDeliveryReports", report("forged"), None)
    send("m-other-key", "DispatchEmail", {"email_id": "e-1"}, Signer.generated())
    send("m-signed", "RecordDeliveryReports", report("genuine"), signer)
    moved: list[Message] = []

    def done() -> bool:
        while (message := broker.get(broker.topology.error_queue)) is not None:
            moved.append(message)
        with engine.connect() as conn:
            applied = conn.execute(select(provider_events.c.event_id)).all()
        return len(moved) >= 2 and bool(applied)

    bus.consume(pipeline.handle_batch, should_stop=stop_when(done), idle_timeout=0.05)

    assert sorted(m.headers["NServiceBus.MessageId"] for m in moved) == ["m-forged", "m-other-key"]
    assert {m.headers["NServiceBus.ExceptionInfo.Message"] for m in moved} == {FORGED}
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(provider_events.c.event_id))] == ["genuine"]
    assert dispatched == []
    assert len(timeline_of("e-1")) > len(accepted)  # the genuine report was applied, the forged one not
    assert broker.depth(broker.topology.input_queue) == 0


# -- recoverability: retries through the bus ------------------------------------------------


def _consume_one(bus: KombuBus, act: Callable[[Delivery], None]) -> Delivery:
    handled: list[Delivery] = []

    def on_batch(batch: list[Delivery]) -> None:
        for delivery in batch:
            act(delivery)
        handled.extend(batch)

    bus.consume(
        on_batch, prefetch=1, max_batch=1, should_stop=stop_when(lambda: bool(handled)), idle_timeout=0.05
    )
    [delivery] = handled
    return delivery


def test_a_retry_republishes_the_same_message_with_its_count_then_acks(bus: KombuBus, broker: Broker) -> None:
    sent = outgoing_message(
        1, broker.topology, headers={"NServiceBus.MessageId": "msg-1", "NServiceBus.CorrelationId": "c-1"}
    )
    bus.publish([sent])
    first = _consume_one(bus, lambda d: bus.send_to_retry(d, {"Emailer.ImmediateRetries": "1"}, 0))
    assert first.state == "acked"
    again = _consume_one(bus, lambda d: d.ack())
    assert again.body == sent.body and again.message_id == "msg-1"
    assert again.headers["Emailer.ImmediateRetries"] == "1"
    assert again.headers["NServiceBus.CorrelationId"] == "c-1"
    assert broker.depth(broker.topology.input_queue) == 0


def test_a_delayed_retry_waits_its_delay_and_a_long_delay_never_holds_up_a_short_one(
    bus: KombuBus, broker: Broker
) -> None:
    bus.declare_delay_queues()
    bus.publish([outgoing_message(n, broker.topology) for n in (1, 2)])
    scheduled: dict[str, float] = {}

    def delay(d: Delivery) -> None:
        scheduled[d.message_id] = time.monotonic()
        # msg-1 waits 3 s, msg-2 only 0.3 s: msg-2 must not queue behind msg-1.
        bus.send_to_retry(d, {"NServiceBus.Retries": "1"}, 3.0 if d.message_id == "msg-1" else 0.3)

    for _ in range(2):
        _consume_one(bus, delay)
    back = _consume_one(bus, lambda d: bus.send_to_retry(d, {"Emailer.ImmediateRetries": "1"}, 0))
    waited = time.monotonic() - scheduled["msg-2"]
    assert back.message_id == "msg-2" and back.headers["NServiceBus.Retries"] == "1"
    assert 0.25 <= waited < 2.5
    again = _consume_one(bus, lambda d: d.ack())
    # What RabbitMQ added when it dead-lettered the message is not carried further.
    assert again.message_id == "msg-2" and not any(h.startswith("x-") for h in again.headers)


def test_consuming_pauses_and_hands_over_the_same_deliveries_while_a_dependency_is_down(
    bus: KombuBus, broker: Broker
) -> None:
    from emailer.infrastructure import InfrastructureUnavailable

    bus.publish([outgoing_message(n, broker.topology) for n in range(3)])
    handed: list[list[Delivery]] = []

    def on_batch(batch: list[Delivery]) -> None:
        handed.append(list(batch))
        if len(handed) < 3:
            raise InfrastructureUnavailable("database", ConnectionRefusedError("refused"))
        for delivery in batch:
            delivery.ack()

    with capture_logs() as logs:
        bus.consume(
            on_batch,
            should_stop=stop_when(lambda: len(handed) >= 3 and all(d.settled for d in handed[-1])),
            idle_timeout=0.05,
        )
    first, *later = handed
    assert len(first) == 3 and all(batch == first for batch in later)  # the same, never requeued
    assert all(d.state == "acked" and not d.redelivered for d in first)
    assert [e["event"] for e in logs if e["event"].startswith("bus.consumer.")] == [
        "bus.consumer.paused",
        "bus.consumer.resumed",
    ]
    assert broker.depth(broker.topology.input_queue) == 0
