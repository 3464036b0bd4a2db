"""The message pipeline on fakes: batches, dedupe, ack after commit, failures never dropped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from contracts import DispatchEmail, SendEmail
from emailer.domain import RetryPolicy
from emailer.endpoint.pipeline import MessagePipeline
from emailer.endpoint.registry import Registry, Route
from emailer.retries import IMMEDIATE_RETRIES
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email_payload
from tests.fakes import FakeBlobStore, FakeClock, FakeRelay, FakeUnitOfWork, _Store


@dataclass
class FakeDelivery:
    message_id: str
    message_type: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    redelivered: bool = False
    acked: bool = False
    requeued: int = 0

    def ack(self) -> None:
        self.acked = True

    def requeue(self) -> None:
        self.requeued += 1


class FakeErrorQueue:
    def __init__(self) -> None:
        self.messages: list[tuple[FakeDelivery, str]] = []

    def send_to_error(self, delivery: FakeDelivery, reason: str, exc: BaseException | None = None) -> None:
        self.messages.append((delivery, reason))
        delivery.ack()


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = _Store()
        self.blobs = FakeBlobStore()
        self.errors = FakeErrorQueue()
        self.relay = FakeRelay()
        self.calls = 0
        self.fail_on: set[str] = set()
        registry = Registry([Route(SendEmail, self._send), Route(DispatchEmail, lambda m, u: None, False)])
        self.pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
            registry, self.new_uow, self.relay, self.errors
        )

    def new_uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.clock, self.store)

    def _send(self, message: SendEmail, uow: FakeUnitOfWork) -> None:
        self.calls += 1
        if message.email_id in self.fail_on:
            raise RuntimeError("database hiccup")
        handle_send_email(message, uow, self.blobs, self.clock, RetryPolicy())


def delivery(message_id: str, **changes: Any) -> FakeDelivery:
    body = json.dumps(send_email_payload(**changes)).encode()
    return FakeDelivery(message_id, "SendEmail", body)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_batch_commits_once_then_acks_all_and_relays(h: Harness) -> None:
    batch = [delivery(f"m{i}") for i in range(5)]
    h.pipeline.handle_batch(batch)
    assert all(d.acked for d in batch)
    assert len(h.store.emails) == 5 and len(h.store.inbox) == 5
    assert h.relay.publisher.types().count("EmailQueued") == 5


def test_the_same_message_twice_is_handled_once(h: Harness) -> None:
    first = delivery("same", email_id="e1")
    again = FakeDelivery("same", "SendEmail", first.body, redelivered=True)
    h.pipeline.handle_batch([first])
    h.pipeline.handle_batch([again])
    assert again.acked and h.calls == 1
    assert h.relay.publisher.types().count("EmailQueued") == 1


def test_one_failing_message_does_not_cost_the_others(h: Harness) -> None:
    h.fail_on = {"bad"}
    good, bad = delivery("m1", email_id="good"), delivery("m2", email_id="bad")
    h.pipeline.handle_batch([good, bad])
    assert good.acked and not bad.acked and bad.requeued == 1
    assert set(h.store.emails) == {"good"}


def test_a_message_that_keeps_failing_goes_to_the_error_queue(h: Harness) -> None:
    h.fail_on = {"bad"}
    bad = delivery("m1", email_id="bad")
    for _ in range(IMMEDIATE_RETRIES + 1):
        h.pipeline.handle_batch([bad])
    assert bad.requeued == IMMEDIATE_RETRIES
    [(moved, reason)] = h.errors.messages
    assert moved is bad and "database hiccup" in reason


@pytest.mark.parametrize(
    ("message_type", "body", "reason"),
    [
        ("SendEmail", b"{not json", "invalid SendEmail"),
        ("SendEmail", json.dumps(send_email_payload(subject="a\r\nBcc: x@example.com")).encode(), "subject"),
        ("SendEmail", json.dumps(send_email_payload(to=[{"email": "nope"}])).encode(), "to.0.email"),
        ("ChargeCard", b"{}", "does not handle 'ChargeCard'"),
        (None, b"{}", "no message type"),
    ],
)
def test_invalid_messages_go_to_the_error_queue_with_the_reason(
    h: Harness, message_type: str | None, body: bytes, reason: str
) -> None:
    bad = FakeDelivery("m1", message_type, body)
    h.pipeline.handle_batch([bad])
    [(moved, why)] = h.errors.messages
    assert moved is bad and reason in why
    assert h.store.emails == {} and h.calls == 0


def test_every_log_line_of_a_message_carries_its_ids(h: Harness) -> None:
    import structlog

    captured = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
    try:
        payload = send_email_payload()
        first = FakeDelivery(
            "m1", "SendEmail", json.dumps(payload).encode(), {"NServiceBus.CorrelationId": "c-1"}
        )
        again = FakeDelivery("m1", "SendEmail", first.body, {"NServiceBus.CorrelationId": "c-1"})
        h.pipeline.handle_batch([first])
        h.pipeline.handle_batch([again])  # logs "duplicate message ignored"
    finally:
        structlog.reset_defaults()
    lines = [e for e in captured.entries if e["event"] == "pipeline.duplicate_message_ignored"]
    assert lines and all(e["message_id"] == "m1" and e["correlation_id"] == "c-1" for e in lines)


def test_dispatches_of_a_batch_overlap_and_are_acked_by_the_caller() -> None:
    import threading

    both_inside = threading.Barrier(2, timeout=5)
    threads: set[str] = set()

    def dispatch(message: DispatchEmail, uow: FakeUnitOfWork) -> None:
        threads.add(threading.current_thread().name)
        both_inside.wait()  # only passes if two dispatches run at the same time

    clock, store = FakeClock(), _Store()
    registry = Registry([Route(DispatchEmail, dispatch, transactional=False)])
    pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
        registry, lambda: FakeUnitOfWork(clock, store), FakeRelay(), FakeErrorQueue(), concurrency=4
    )
    batch = [
        FakeDelivery(f"d{i}", "DispatchEmail", json.dumps({"email_id": f"e{i}"}).encode()) for i in range(2)
    ]
    try:
        pipeline.handle_batch(batch)
    finally:
        pipeline.close()
    assert all(d.acked for d in batch) and all(n.startswith("dispatch") for n in threads)
