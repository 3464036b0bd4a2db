"""Handlers with in-memory fakes of the ports: state and messages, not call sequences."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from contracts import CancelEmail, DeliveryReport, DispatchEmail, RecordDeliveryReports, ReportKind
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.domain import EmailStatus, RetryPolicy
from emailer.endpoint.scheduler import schedule_due
from handlers.cancel_email import cancel_email
from handlers.dispatch_email import dispatch_email
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext, Outcome, SendOutcome
from handlers.record_delivery_reports import record_delivery_reports
from handlers.send_email import send_email as handle_send_email
from handlers.unit_of_work import event_message_id
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def uow(clock: FakeClock) -> FakeUnitOfWork:
    return FakeUnitOfWork(clock)


@pytest.fixture
def blobs() -> FakeBlobStore:
    return FakeBlobStore()


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


def accept(uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, **changes: object) -> str:
    command = send_email(**changes)
    with uow:
        uow.context = MessageContext("incoming-1", "SendEmail", {"NServiceBus.CorrelationId": "corr-9"})
        handle_send_email(command, uow, blobs, clock, POLICY)
        uow.commit()
    return command.email_id


def dispatch(uow, blobs, provider, clock, email_id: str, breaker: CircuitBreaker | None = None) -> None:
    dispatch_email(
        DispatchEmail(email_id=email_id), uow, blobs, provider, clock, POLICY, breaker or CircuitBreaker()
    )


def test_send_email_stores_and_queues_dispatch_in_one_commit(uow, blobs, clock) -> None:
    email_id = accept(uow, blobs, clock)
    assert uow.commits == 1
    assert uow.store.emails[email_id].status is EmailStatus.QUEUED
    assert [m.message_type for m in uow.store.outbox] == ["DispatchEmail", "EmailQueued"]
    queued = uow.published("EmailQueued")[0]
    assert queued.message_id == event_message_id(email_id, 1)
    assert queued.headers["NServiceBus.CorrelationId"] == "corr-9"
    assert queued.headers["NServiceBus.RelatedTo"] == "incoming-1"


def test_attachment_bytes_go_to_the_blob_store_and_nowhere_else(uow, blobs, clock) -> None:
    email_id = accept(uow, blobs, clock)
    [data] = blobs.blobs.values()
    assert data.startswith(b"%PDF")
    for message in uow.store.outbox:
        assert b"PDF-1.4" not in message.body and b"JVBERi0" not in message.body  # raw nor base64
    body = json.loads(uow.published("EmailQueued")[0].body)
    assert body["attachments"][0]["sha256"] == next(iter(blobs.blobs))
    assert uow.store.emails[email_id].attachments[0].size == len(data)


def test_same_email_id_twice_yields_one_email_and_one_event(uow, blobs, clock) -> None:
    email_id = accept(uow, blobs, clock)
    accept(uow, blobs, clock, email_id=email_id, subject="a different subject")
    assert len(uow.store.emails) == 1
    assert len(uow.published("EmailQueued")) == 1 and len(uow.published("DispatchEmail")) == 1


def test_send_at_in_the_future_waits_for_the_scheduler(uow, blobs, clock) -> None:
    email_id = accept(uow, blobs, clock, send_at=(clock.now() + timedelta(minutes=10)).isoformat())
    assert uow.published("DispatchEmail") == []
    assert schedule_due(uow, clock, POLICY) == 0
    clock.advance(600)
    assert schedule_due(uow, clock, POLICY) == 1
    [dispatch_command] = uow.published("DispatchEmail")
    assert json.loads(dispatch_command.body) == {"email_id": email_id}


def test_a_reference_to_a_missing_blob_is_invalid(uow, blobs, clock) -> None:
    with pytest.raises(InvalidMessage, match="no blob"):
        accept(uow, blobs, clock, attachments=[{"filename": "a.txt", "sha256": "b" * 64}])
    assert uow.store.emails == {}


def test_dispatch_accepted_records_delivery_started(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    [sent] = provider.sent
    assert sent.email_id == email_id and sent.attachments[0].content.startswith(b"%PDF")
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED
    assert len(uow.published("EmailDeliveryStarted")) == 1


def test_a_provider_whose_acceptance_is_delivery_reports_each_recipient(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome.accepted("local-1", delivered=True))
    dispatch(uow, blobs, provider, clock, email_id)
    delivered = [json.loads(m.body)["recipient"] for m in uow.published("EmailRecipientDelivered")]
    assert delivered == ["ann@example.com", "bob@example.org"]


def test_dispatch_twice_calls_the_provider_once(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    dispatch(uow, blobs, provider, clock, email_id)
    assert len(provider.sent) == 1 and len(uow.published("EmailDeliveryStarted")) == 1


def test_rejection_fails_the_email_with_the_providers_reason(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.REJECTED, reason="The from address is invalid", status=400))
    dispatch(uow, blobs, provider, clock, email_id)
    [failed] = uow.published("EmailDeliveryFailed")
    assert json.loads(failed.body)["reason"] == "The from address is invalid"
    assert uow.store.emails[email_id].status is EmailStatus.FAILED


def test_transient_failure_waits_then_the_scheduler_retries_once(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="503", status=503))
    dispatch(uow, blobs, provider, clock, email_id)
    assert uow.store.emails[email_id].status is EmailStatus.QUEUED
    assert schedule_due(uow, clock, POLICY) == 0  # not due yet
    clock.advance(5)
    assert schedule_due(uow, clock, POLICY) == 1
    assert schedule_due(uow, clock, POLICY) == 0  # leased: no second DispatchEmail
    dispatch(uow, blobs, provider, clock, email_id)
    assert len(provider.sent) == 2
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED


def test_unknown_outcome_is_not_resent_until_the_wait_is_over(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.UNKNOWN, reason="read timed out"))
    dispatch(uow, blobs, provider, clock, email_id)
    clock.advance(60)
    assert schedule_due(uow, clock, POLICY) == 0
    dispatch(uow, blobs, provider, clock, email_id)  # a stray DispatchEmail: ignored
    assert len(provider.sent) == 1
    clock.advance(POLICY.unknown_outcome_wait.total_seconds())
    assert schedule_due(uow, clock, POLICY) == 1


def test_a_callback_during_the_wait_prevents_any_resend(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.UNKNOWN, reason="read timed out"))
    dispatch(uow, blobs, provider, clock, email_id)
    reports = RecordDeliveryReports(reports=[_report(email_id, ReportKind.DELIVERED, clock)])
    with uow:
        record_delivery_reports(reports, uow, clock)
        uow.commit()
    clock.advance(POLICY.unknown_outcome_wait.total_seconds() + 1)
    assert schedule_due(uow, clock, POLICY) == 0
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED


def test_open_circuit_postpones_without_calling_the_provider(uow, blobs, provider, clock) -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=timedelta(seconds=30))
    first, second = accept(uow, blobs, clock), accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="connection refused"))
    dispatch(uow, blobs, provider, clock, first, breaker)
    dispatch(uow, blobs, provider, clock, second, breaker)
    assert len(provider.sent) == 1
    assert uow.store.emails[second].not_before == clock.now() + timedelta(seconds=30)


def test_duplicate_reports_apply_once(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    report = _report(email_id, ReportKind.DELIVERED, clock)
    for _ in range(2):
        with uow:
            record_delivery_reports(RecordDeliveryReports(reports=[report, report]), uow, clock)
            uow.commit()
    assert len(uow.published("EmailRecipientDelivered")) == 1


def test_cancel_before_dispatch_then_dispatch_does_nothing(uow, blobs, provider, clock) -> None:
    email_id = accept(uow, blobs, clock)
    with uow:
        cancel_email(CancelEmail(email_id=email_id, reason="user asked"), uow, clock)
        uow.commit()
    dispatch(uow, blobs, provider, clock, email_id)
    assert provider.sent == [] and len(uow.published("EmailCancelled")) == 1


def _report(email_id: str, kind: ReportKind, clock: FakeClock) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid", provider_event_id=f"{email_id}-{kind}", email_id=email_id,
        recipient="ann@example.com", kind=kind, occurred_at=clock.now(),
    )  # fmt: skip
