"""Recoverability on fakes: immediate then delayed retries counted in headers, the error queue after,
no retry for an invalid message, none spent by an infrastructure failure, a worker's death counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from contracts import SendEmail
from contracts.wire import FAILURE_HEADERS, RETRY_HEADERS, H
from emailer.adapters.bus import BusUnavailable, PublishFailed
from emailer.config import ConfigError, load_settings
from emailer.domain import RetryPolicy
from emailer.endpoint.faults import InjectedFailure
from emailer.endpoint.pipeline import MessagePipeline
from emailer.endpoint.recoverability import ABANDONED, MoveToError, RecoverabilityPolicy, Retry
from emailer.endpoint.registry import Registry, Route
from emailer.infrastructure import InfrastructureUnavailable, unavailable_dependency
from handlers.ports import BlobStoreUnavailable
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email_payload
from tests.fakes import FakeBlobStore, FakeClock, FakeRelay, FakeUnitOfWork, _Store
from tests.unit.test_pipeline import FakeDelivery, FakeErrorQueue

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FAST = RecoverabilityPolicy(immediate_retries=5, delays=(0.2, 0.4, 0.6))


# -- the policy ---------------------------------------------------------------------------


def test_immediate_retries_then_delayed_ones_then_the_error_queue() -> None:
    policy, headers, seen = RecoverabilityPolicy(), {"NServiceBus.MessageId": "m"}, []
    while True:
        decision = policy.decide(headers, NOW)
        if isinstance(decision, MoveToError):
            break
        seen.append(decision.delay)
        headers = {**headers, **decision.headers}
    assert seen == [0, 0, 0, 0, 0, 10, 20, 30]
    assert decision.headers == {H.IMMEDIATE_RETRIES: "5", H.RETRIES: "3"}
    assert headers[H.RETRIES_TIMESTAMP] == "2026-01-02 03:04:05:000000 Z"
    assert policy.attempts == 1 + 5 + 3


def test_counts_come_from_the_headers_whichever_worker_reads_them() -> None:
    later = RecoverabilityPolicy().decide({H.IMMEDIATE_RETRIES: "5", H.RETRIES: "1"}, NOW)
    assert isinstance(later, Retry) and later.delay == 20 and later.headers[H.RETRIES] == "2"
    garbage = RecoverabilityPolicy().decide({H.IMMEDIATE_RETRIES: "-3", H.RETRIES: "x"}, NOW)
    assert isinstance(garbage, Retry) and garbage.headers == {H.IMMEDIATE_RETRIES: "1"}


def test_retries_are_configurable_and_the_last_delay_repeats() -> None:
    s = load_settings(immediate_retries=1, delayed_retries=4, delayed_retry_delays="0.5, 2")
    assert s.retry_delays == (0.5, 2.0, 2.0, 2.0)
    assert load_settings(delayed_retries=0).retry_delays == ()
    for bad in ("", "ten", "-1", "0"):
        with pytest.raises(ConfigError, match="EMAILER_DELAYED_RETRY_DELAYS"):
            load_settings(delayed_retry_delays=bad)


def test_the_header_names_are_written_down_once_for_the_tools_that_read_them() -> None:
    assert RETRY_HEADERS == (
        "NServiceBus.Retries",
        "NServiceBus.Retries.Timestamp",
        "Emailer.ImmediateRetries",
    )
    assert "Emailer.Handler" in FAILURE_HEADERS and "NServiceBus.FailedQ" in FAILURE_HEADERS


# -- infrastructure failures, told apart in one place ----------------------------------------


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), "database"),
        (DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), "database"),
        (BlobStoreUnavailable("S3 is not answering"), "object store"),
        (BusUnavailable("amqp://x", "refused"), "broker"),
        (PublishFailed("no route"), "broker"),
        (ConnectionResetError("reset"), "broker"),
        (TimeoutError("timed out"), "network"),
        (DBAPIError("SELECT 1", {}, Exception("syntax"), connection_invalidated=False), None),
        (ValueError("a bug"), None),
        (InjectedFailure("always"), None),
    ],
)
def test_infrastructure_failures_are_classified_in_one_place(exc: Exception, dependency: str | None) -> None:
    assert unavailable_dependency(exc) == dependency


# -- the pipeline --------------------------------------------------------------------------


class Endpoint:
    """A pipeline on fakes whose SendEmail handler can be made to fail."""

    def __init__(self, policy: RecoverabilityPolicy = FAST, fail_handling: str | None = None) -> None:
        self.clock, self.store, self.blobs = FakeClock(), _Store(), FakeBlobStore()
        self.errors = FakeErrorQueue()
        self.raise_: Exception | None = None
        self.calls = 0
        self.policy, self.fail_handling = policy, fail_handling
        self.pipeline = self.restart()

    def restart(self) -> MessagePipeline[FakeDelivery]:
        """A new worker process (the store and queues outlive it)."""
        registry = Registry([Route(SendEmail, self._send, handler_name="handlers.send_email.send_email")])
        self.pipeline = MessagePipeline(
            registry,
            lambda: FakeUnitOfWork(self.clock, self.store),
            FakeRelay(),
            self.errors,
            recoverability=self.policy,
            fail_handling=self.fail_handling,
        )
        return self.pipeline

    def _send(self, message: SendEmail, uow: FakeUnitOfWork) -> None:
        self.calls += 1
        if self.raise_ is not None:
            raise self.raise_
        handle_send_email(message, uow, self.blobs, self.clock, RetryPolicy())

    def run_until_settled(self, first: FakeDelivery, limit: int = 50) -> FakeDelivery:
        """Hand ``first``, then each copy sent back for a retry, until none comes back."""
        current = first
        for _ in range(limit):
            before = len(self.errors.retries)
            self.pipeline.handle_batch([current])
            if len(self.errors.retries) == before:
                return current
            current = self.errors.retries[-1][0]
        raise AssertionError("never settled")


def send_email(message_id: str = "m1", **changes: object) -> FakeDelivery:
    body = json.dumps(send_email_payload(**changes)).encode()
    return FakeDelivery(message_id, "SendEmail", body, {H.MESSAGE_ID: message_id, "X-Theirs": "kept"})


def test_a_handler_that_always_fails_is_tried_1_plus_5_plus_3_times_then_goes_to_error() -> None:
    e = Endpoint(fail_handling="SendEmail")
    last = e.run_until_settled(send_email())
    assert [delay for _, delay in e.errors.retries] == [0, 0, 0, 0, 0, 0.2, 0.4, 0.6]
    [(moved, reason)] = e.errors.messages
    assert moved is last and "injected failure" in reason
    [headers] = e.errors.headers
    assert headers[H.IMMEDIATE_RETRIES] == "5" and headers[H.RETRIES] == "3"
    assert headers[H.HANDLER] == "handlers.send_email.send_email"
    assert headers["X-Theirs"] == "kept" and H.RETRIES_TIMESTAMP in headers
    assert e.store.emails == {}


def test_the_count_survives_a_new_worker() -> None:
    e = Endpoint()
    e.raise_ = RuntimeError("a bug")
    e.pipeline.handle_batch([first := send_email()])
    e.pipeline.handle_batch([second := e.errors.retries[-1][0]])
    e.restart()  # another worker takes the third copy: it reads the count, not its memory
    e.pipeline.handle_batch([e.errors.retries[-1][0]])
    assert first.acked and second.acked
    assert e.errors.retries[-1][0].headers[H.IMMEDIATE_RETRIES] == "3"


@pytest.mark.parametrize("body", [b"{not json", json.dumps({"email_id": "x"}).encode()])
def test_a_message_that_fails_its_contract_skips_every_retry(body: bytes) -> None:
    e = Endpoint()
    e.pipeline.handle_batch([bad := FakeDelivery("m1", "SendEmail", body)])
    assert e.errors.retries == [] and [d for d, _ in e.errors.messages] == [bad]
    assert e.errors.headers[0][H.IMMEDIATE_RETRIES] == "0" and H.HANDLER not in e.errors.headers[0]


@pytest.mark.parametrize(
    "outage",
    [
        OperationalError("INSERT ...", {"subject": "secret"}, Exception("connection refused")),
        BlobStoreUnavailable("S3 is not answering"),
        BusUnavailable("amqp://x", "refused"),
    ],
    ids=["database", "object-store", "broker"],
)
def test_an_infrastructure_failure_spends_no_retry_and_leaves_the_batch_unsettled(outage: Exception) -> None:
    e = Endpoint()
    batch = [send_email(f"m{i}", email_id=f"e{i}") for i in range(3)]
    e.raise_ = outage
    for _ in range(20):  # however long the outage lasts
        with pytest.raises(InfrastructureUnavailable):
            e.pipeline.handle_batch(batch)
    assert e.calls == 20  # the whole batch at once, never one by one
    assert not any(d.acked or d.requeued for d in batch)
    assert e.errors.retries == [] and e.errors.messages == []
    e.raise_ = None  # the dependency is back: the same deliveries go through
    e.pipeline.handle_batch(batch)
    assert all(d.acked for d in batch) and set(e.store.emails) == {"e0", "e1", "e2"}


def test_a_message_redelivered_from_a_worker_that_died_counts_as_an_attempt() -> None:
    e = Endpoint()
    e.pipeline.handle_batch([again := FakeDelivery("m1", "SendEmail", send_email().body, redelivered=True)])
    [(copy, delay)] = e.errors.retries
    assert again.acked and e.calls == 0 and delay == 0
    assert copy.headers[H.IMMEDIATE_RETRIES] == "1"
    e.pipeline.handle_batch([copy])
    assert e.calls == 1 and copy.acked and e.store.emails


def test_a_message_this_worker_gave_back_itself_is_not_counted() -> None:
    e = Endpoint()
    e.raise_ = OperationalError("SELECT 1", {}, Exception("gone"))
    with pytest.raises(InfrastructureUnavailable):
        e.pipeline.handle_batch([send_email()])
    e.raise_ = None
    e.pipeline.handle_batch([back := FakeDelivery("m1", "SendEmail", send_email().body, redelivered=True)])
    assert back.acked and e.errors.retries == [] and e.calls == 2


def test_a_message_that_kills_every_worker_still_ends_in_the_error_queue() -> None:
    e = Endpoint()
    current = send_email()
    deaths = 0
    while not e.errors.messages:
        # The worker dies while handling it: nothing settles it, the broker delivers it again to a new one.
        deaths += 1
        assert deaths <= FAST.attempts + 1
        e.restart()
        current.redelivered = True
        before = len(e.errors.retries)
        e.pipeline.handle_batch([current])
        if len(e.errors.retries) > before:
            current = e.errors.retries[-1][0]
    assert deaths == FAST.attempts
    [(moved, reason)] = e.errors.messages
    assert reason == ABANDONED and e.errors.headers[0][H.RETRIES] == "3"


def test_the_ops_definitions_declare_the_delay_queues_the_worker_declares() -> None:
    from pathlib import Path

    from emailer.adapters.bus import Topology

    definitions = json.loads((Path(__file__).parents[2] / "ops/rabbitmq/definitions.json").read_text())
    declared = {q["name"]: q["arguments"] for q in definitions["queues"] if ".delay." in q["name"]}
    expected = {q.name: q.queue_arguments for q in Topology().delay_queues()}  # type: ignore[attr-defined]
    assert declared == expected
    assert set(expected) == {"emailer.delay.10s", "emailer.delay.20s", "emailer.delay.30s"}


def test_heartbeats_are_on_for_rabbitmq_and_configurable() -> None:
    from emailer.bootstrap import build_bus

    key = "k" * 32
    rabbit = build_bus(load_settings(bus_url="amqp://u:p@127.0.0.1:1//", internal_key=key))
    tuned = build_bus(load_settings(bus_url="amqp://u:p@127.0.0.1:1//", internal_key=key, broker_heartbeat=3))
    embedded = build_bus(load_settings(bus_url="memory://"))
    assert [rabbit._publisher.heartbeat, rabbit._consumer.heartbeat] == [10, 10]
    assert tuned._consumer.heartbeat == 3 and embedded._consumer.heartbeat == 0
