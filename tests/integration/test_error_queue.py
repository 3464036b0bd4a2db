# mypy: allow-untyped-calls
"""The error queue adapter on RabbitMQ: browsing changes nothing, a move is confirmed before the ack."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from kombu.connection import Connection
from kombu.entity import Queue

from contracts.wire import H
from emailer.adapters.bus import PublishFailed
from emailer.adapters.bus.error_queue import ErrorQueue, ErrorQueueMissing
from emailer.adapters.bus.replay import replayed
from handlers.errors import InvalidMessage
from tests.failed_messages import put_failed

pytestmark = pytest.mark.rabbitmq


class Queues:
    def __init__(self, url: str, prefix: str) -> None:
        self.error = f"{prefix}.error"
        self.input = f"{prefix}.in"
        self.connection = Connection(url, transport_options={"confirm_publish": True})
        self.channel = self.connection.channel()
        self.channel.auto_decode = False
        for name in (self.error, self.input):
            Queue(name, durable=True).declare(channel=self.channel)

    def put(self, message_id: str, *, exc: Exception | None = None, message_type: str = "SendEmail") -> None:
        put_failed(
            self.channel, self.error, message_id=message_id, body={"email_id": message_id},
            failed_queue=self.input, exc=exc, message_type=message_type,
        )  # fmt: skip

    def ids(self, queue: str) -> list[str]:
        """Take every message off ``queue`` (acked): their message ids in queue order."""
        found = []
        while (message := Queue(queue, no_declare=True).bind(self.channel).get(no_ack=True)) is not None:
            found.append(message.properties["message_id"])
        return found

    def headers_of_first(self, queue: str) -> dict[str, str]:
        message = Queue(queue, no_declare=True).bind(self.channel).get(no_ack=True)
        assert message is not None
        return dict(message.headers)

    def close(self) -> None:
        for name in (self.error, self.input):
            self.channel.queue_delete(name)
        self.connection.release()


@pytest.fixture
def queues(rabbitmq_url: str, unique_name: str) -> Iterator[Queues]:
    q = Queues(rabbitmq_url, unique_name)
    yield q
    q.close()


@pytest.fixture
def errors(rabbitmq_url: str, queues: Queues) -> Iterator[ErrorQueue]:
    with ErrorQueue(rabbitmq_url, queues.error, idle_timeout=1.0) as e:
        yield e


def test_browsing_loses_and_reorders_nothing(queues: Queues, errors: ErrorQueue) -> None:
    ids = [f"m-{i:03d}" for i in range(30)]
    for message_id in ids:
        queues.put(message_id)
    first = errors.browse()
    again = errors.browse()
    assert [m.message_id for m in first] == ids == [m.message_id for m in again]
    assert first[0].failed_queue == queues.input
    assert first[0].body == b'{"email_id": "m-000"}'
    assert errors.depth() == 30
    assert queues.ids(queues.error) == ids


def test_browsing_while_a_worker_writes_into_the_queue(
    rabbitmq_url: str, queues: Queues, errors: ErrorQueue
) -> None:
    before = [f"a-{i:03d}" for i in range(50)]
    for message_id in before:
        queues.put(message_id)
    during = [f"b-{i:03d}" for i in range(50)]
    started = threading.Event()

    def writer() -> None:
        with Connection(rabbitmq_url, transport_options={"confirm_publish": True}) as conn:
            channel = conn.channel()
            started.set()
            for message_id in during:
                put_failed(channel, queues.error, message_id=message_id, body={}, failed_queue=queues.input)

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait(5)
    seen = [m.message_id for m in errors.browse()]
    thread.join(10)
    assert seen[:50] == before  # the snapshot: what was there when it started
    assert queues.ids(queues.error) == before + during  # every message, in order


def test_a_replay_moves_only_what_was_chosen_with_the_same_id_and_no_failure_headers(
    queues: Queues, errors: ErrorQueue
) -> None:
    for message_id in ("keep-1", "go-1", "keep-2", "go-2"):
        queues.put(message_id)
    seen: list[tuple[str, bool]] = []
    taken = errors.take(
        lambda m: [replayed(m)] if m.message_id.startswith("go") else None,
        on_seen=lambda m, moved: seen.append((m.message_id, moved)),
    )
    assert (taken.seen, taken.moved) == (4, 2)
    assert seen == [("keep-1", False), ("go-1", True), ("keep-2", False), ("go-2", True)]
    headers = queues.headers_of_first(queues.input)
    assert headers[H.MESSAGE_ID] == "go-1" and headers[H.CORRELATION_ID] == "corr-go-1"
    assert not [name for name in headers if name.startswith("NServiceBus.ExceptionInfo")]
    assert H.FAILED_Q not in headers and H.TIME_OF_FAILURE not in headers
    assert queues.ids(queues.input) == ["go-2"]
    assert queues.ids(queues.error) == ["keep-1", "keep-2"]


def test_a_purge_removes_what_was_chosen_and_a_limit_stops_early(queues: Queues, errors: ErrorQueue) -> None:
    for message_id in ("a", "b", "c", "d"):
        queues.put(message_id, exc=InvalidMessage("bad") if message_id != "c" else KeyError("k"))
    taken = errors.take(lambda m: [] if m.message_id != "c" else None, limit=2)
    assert taken.moved == 2
    assert queues.ids(queues.error) == ["c", "d"]
    assert queues.ids(queues.input) == []


def test_a_destination_that_does_not_exist_leaves_the_message_where_it_was(
    queues: Queues, errors: ErrorQueue
) -> None:
    put_failed(
        queues.channel, queues.error, message_id="lost?", body={}, failed_queue=f"nowhere-{uuid.uuid4().hex}"
    )
    queues.put("after")
    with pytest.raises(PublishFailed, match="unroutable"):
        errors.take(lambda m: [replayed(m)])
    assert queues.ids(queues.error) == ["lost?", "after"]


def test_a_missing_queue_is_named(rabbitmq_url: str, unique_name: str) -> None:
    with pytest.raises(ErrorQueueMissing, match=f"{unique_name}.nope"):
        ErrorQueue(rabbitmq_url, f"{unique_name}.nope").connect()


def test_memory_bus_is_refused() -> None:
    with pytest.raises(ValueError, match="RabbitMQ"):
        ErrorQueue("memory://", "error")
