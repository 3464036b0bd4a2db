"""The message pipeline on fakes: batches, dedupe, ack after commit, failures never dropped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from contracts import DeliveryReport, DispatchEmail, RecordDeliveryReports, ReportKind, SendEmail
from emailer.domain import RetryPolicy
from emailer.endpoint import trusted
from emailer.endpoint.pipeline import MessagePipeline
from emailer.endpoint.recoverability import RecoverabilityPolicy
from emailer.endpoint.registry import Registry, Route
from emailer.signing import FORGED, SIGNATURE_HEADER, Signer
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
    """The error queue and the retry path of a bus: what was moved where, with which headers."""

    def __init__(self) -> None:
        self.messages: list[tuple[FakeDelivery, str]] = []
        self.headers: list[dict[str, str]] = []
        self.retries: list[tuple[FakeDelivery, float]] = []
        """The copies sent back for a retry (the same message, counts raised), with their delay."""

    def send_to_error(
        self,
        delivery: FakeDelivery,
        reason: str,
        exc: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.messages.append((delivery, reason))
        self.headers.append({**delivery.headers, **(extra_headers or {})})
        delivery.ack()

    def send_to_retry(self, delivery: FakeDelivery, headers: Mapping[str, str], delay: float) -> None:
        copy = FakeDelivery(
            delivery.message_id, delivery.message_type, delivery.body, {**delivery.headers, **headers}
        )
        self.retries.append((copy, delay))
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
    [(retry, delay)] = h.errors.retries
    assert good.acked and bad.acked and bad.requeued == 0  # republished with its count, not requeued
    assert retry.headers["Emailer.ImmediateRetries"] == "1" and delay == 0
    assert set(h.store.emails) == {"good"}


def test_a_message_that_keeps_failing_goes_to_the_error_queue(h: Harness) -> None:
    h.fail_on = {"bad"}
    current = delivery("m1", email_id="bad")
    policy = RecoverabilityPolicy()
    for _ in range(policy.attempts):
        h.pipeline.handle_batch([current])
        if h.errors.retries and h.errors.retries[-1][0] is not current:
            current = h.errors.retries[-1][0]
    [(moved, reason)] = h.errors.messages
    assert h.calls == policy.attempts == 9
    assert moved is current and "database hiccup" in reason


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
    signer = Signer.generated()
    pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
        registry,
        lambda: FakeUnitOfWork(clock, store),
        FakeRelay(),
        FakeErrorQueue(),
        concurrency=4,
        signer=signer,
    )
    batch = [signed(signer, f"d{i}", "DispatchEmail", {"email_id": f"e{i}"}) for i in range(2)]
    try:
        pipeline.handle_batch(batch)
    finally:
        pipeline.close()
    assert (
        all(d.acked for d in batch) and len(threads) == 2 and all(n.startswith("dispatch") for n in threads)
    )


def signed(signer: Signer, message_id: str, message_type: str, payload: dict[str, Any]) -> FakeDelivery:
    body = json.dumps(payload).encode()
    return FakeDelivery(
        message_id, message_type, body, {SIGNATURE_HEADER: signer.sign(message_id, message_type, body)}
    )


# -- a poison message costs only itself ---------------------------------------------


class RefusingErrorQueue(FakeErrorQueue):
    """An error queue the broker will not take anything into (deleted, full, refusing)."""

    def send_to_error(
        self,
        delivery: FakeDelivery,
        reason: str,
        exc: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        raise RuntimeError("error queue refused the copy")


def test_a_message_the_error_queue_refuses_is_kept_and_the_batch_goes_on(h: Harness) -> None:
    h.pipeline.errors = RefusingErrorQueue()
    poison = FakeDelivery("x" * 300, "SendEmail", b"{not json")
    valid = [delivery(f"m{i}", email_id=f"e{i}") for i in range(3)]

    h.pipeline.handle_batch([valid[0], poison, *valid[1:]])

    assert set(h.store.emails) == {"e0", "e1", "e2"} and all(d.acked for d in valid)
    assert not poison.acked and poison.requeued == 1  # still on the input queue: never dropped


def test_a_valid_message_with_an_id_longer_than_any_column_is_stored(h: Harness) -> None:
    long_id = delivery("m" * 1000, email_id="long")
    h.pipeline.handle_batch([long_id, delivery("m2", email_id="short")])
    assert set(h.store.emails) == {"long", "short"} and long_id.acked


# -- internal commands are accepted only from Emailer itself -------------------------


class InternalHarness:
    def __init__(self) -> None:
        from handlers.record_delivery_reports import record_delivery_reports

        self.clock, self.store, self.blobs = FakeClock(), _Store(), FakeBlobStore()
        self.signer = Signer.generated()
        self.errors = FakeErrorQueue()
        self.dispatched: list[str] = []
        registry = Registry(
            [
                Route(
                    SendEmail, lambda m, uow: handle_send_email(m, uow, self.blobs, self.clock, RetryPolicy())
                ),
                Route(
                    RecordDeliveryReports,
                    lambda m, uow: record_delivery_reports(m, uow, self.clock),
                    trusted_decoder=trusted.record_delivery_reports,
                ),
                Route(DispatchEmail, lambda m, uow: self.dispatched.append(m.email_id), transactional=False),
            ]
        )
        self.pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
            registry,
            lambda: FakeUnitOfWork(self.clock, self.store, signer=self.signer),
            FakeRelay(),
            self.errors,
            signer=self.signer,
        )

    def accept(self, email_id: str) -> None:
        self.pipeline.handle_batch([delivery(f"send-{email_id}", email_id=email_id)])

    def report(self, email_id: str) -> dict[str, Any]:
        return RecordDeliveryReports(
            reports=[
                DeliveryReport(
                    provider="sendgrid", provider_event_id="ev-1", email_id=email_id,
                    recipient="ann@example.com", kind=ReportKind.BOUNCED, occurred_at=self.clock.now(),
                    reason="forged reason",
                )
            ]
        ).model_dump(mode="json")  # fmt: skip


@pytest.fixture
def ih() -> InternalHarness:
    return InternalHarness()


@pytest.mark.parametrize("signature", [None, "", "hmac-sha256=" + "0" * 64, "garbage"])
def test_a_forged_delivery_report_changes_nothing_and_goes_to_the_error_queue(
    ih: InternalHarness, signature: str | None
) -> None:
    ih.accept("e1")
    before = ih.store.emails["e1"].version
    body = json.dumps(ih.report("e1")).encode()
    forged = FakeDelivery(
        "r1", "RecordDeliveryReports", body, {} if signature is None else {SIGNATURE_HEADER: signature}
    )

    ih.pipeline.handle_batch([forged])

    assert ih.errors.messages == [(forged, FORGED)] and forged.acked
    assert ih.store.emails["e1"].version == before and not ih.store.provider_events


def test_a_signed_delivery_report_is_applied(ih: InternalHarness) -> None:
    ih.accept("e1")
    before = ih.store.emails["e1"].version
    report = signed(ih.signer, "r1", "RecordDeliveryReports", ih.report("e1"))

    ih.pipeline.handle_batch([report])

    assert ih.errors.messages == [] and report.acked
    assert ih.store.provider_events == {("sendgrid", "ev-1")} and ih.store.emails["e1"].version > before


def test_a_signed_delivery_report_the_trusted_decoder_cannot_read_is_decoded_the_validating_way(
    ih: InternalHarness,
) -> None:
    ih.accept("e1")
    payload = ih.report("e1")
    # valid for the contract, but not as Emailer writes it:
    payload["reports"][0]["occurred_at"] = int(ih.clock.now().timestamp())
    report = signed(ih.signer, "r1", "RecordDeliveryReports", payload)

    ih.pipeline.handle_batch([report])

    assert ih.errors.messages == [] and report.acked
    assert ih.store.provider_events == {("sendgrid", "ev-1")}


def test_a_signed_delivery_report_neither_decoder_reads_goes_to_the_error_queue(ih: InternalHarness) -> None:
    report = signed(ih.signer, "r1", "RecordDeliveryReports", {"reports": []})

    ih.pipeline.handle_batch([report])

    [(refused, reason)] = ih.errors.messages
    assert refused is report and "reports" in reason and not ih.store.provider_events


def test_a_signature_binds_id_type_and_body(ih: InternalHarness) -> None:
    other_key = Signer.generated()
    good = signed(ih.signer, "d1", "DispatchEmail", {"email_id": "e1"})
    refused = [
        signed(other_key, "d2", "DispatchEmail", {"email_id": "e1"}),  # another key
        FakeDelivery("d3", "DispatchEmail", good.body, dict(good.headers)),  # another message id
        FakeDelivery("d1", "DispatchEmail", b'{"email_id": "e2"}', dict(good.headers)),  # another body
        FakeDelivery("d1", "Emailer.Contracts.DispatchEmail, Emailer", b"{}", {}),  # long type name, unsigned
    ]

    ih.pipeline.handle_batch([good, *refused])

    assert ih.dispatched == ["e1"]
    assert [(d.message_id, why) for d, why in ih.errors.messages] == [(d.message_id, FORGED) for d in refused]


def test_what_emailer_sends_itself_is_signed_and_accepted(ih: InternalHarness) -> None:
    ih.accept("e1")
    [command] = [m for m in ih.store.outbox if m.message_type == "DispatchEmail"]
    assert SIGNATURE_HEADER in command.headers

    ih.pipeline.handle_batch(
        [FakeDelivery(command.message_id, command.message_type, command.body, dict(command.headers))]
    )

    assert ih.dispatched == ["e1"] and ih.errors.messages == []


def test_public_commands_need_no_signature(ih: InternalHarness) -> None:
    ih.accept("e1")
    assert "e1" in ih.store.emails and ih.errors.messages == []


def test_without_a_key_every_internal_command_is_refused(h: Harness) -> None:
    unsigned = FakeDelivery("d1", "DispatchEmail", b'{"email_id": "e1"}')
    h.pipeline.handle_batch([unsigned])
    assert h.errors.messages == [(unsigned, FORGED)]
