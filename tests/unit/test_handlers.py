"""Handlers with in-memory fakes of the ports: state and messages, not call sequences."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from contracts import CancelEmail, DeliveryReport, DispatchEmail, RecordDeliveryReports, ReportKind
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.domain import EmailIdReused, EmailStatus, RetryPolicy
from emailer.endpoint.scheduler import schedule_due
from handlers.cancel_email import cancel_email
from handlers.dispatch_email import dispatch_email, record_outcome
from handlers.errors import ConcurrencyConflict, InvalidMessage
from handlers.ports import MessageContext, Outcome, Provider, SendOutcome
from handlers.record_delivery_reports import record_delivery_reports
from handlers.send_email import send_email as handle_send_email
from handlers.unit_of_work import EVENT_ID_NAMESPACE, event_message_id
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))


def accept(uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, **changes: object) -> str:
    command = send_email(**changes)
    with uow:
        uow.context = MessageContext("incoming-1", "SendEmail", {"NServiceBus.CorrelationId": "corr-9"})
        handle_send_email(command, uow, blobs, clock, POLICY)
        uow.commit()
    return command.email_id


def dispatch(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: Provider, clock: FakeClock, email_id: str
) -> None:
    dispatch_email(DispatchEmail(email_id=email_id), uow, blobs, provider, clock, POLICY)


def test_send_email_stores_and_queues_dispatch_in_one_commit(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    assert uow.commits == 1
    assert uow.store.emails[email_id].status is EmailStatus.QUEUED
    assert [m.message_type for m in uow.store.outbox] == ["DispatchEmail", "EmailQueued"]
    dispatch_command, queued = uow.store.outbox
    assert queued.message_id == event_message_id(email_id, 1)
    for message in (dispatch_command, queued):
        assert message.headers["NServiceBus.CorrelationId"] == "corr-9"
        assert message.headers["NServiceBus.RelatedTo"] == "incoming-1"
    assert dispatch_command.intent == "Send" and dispatch_command.destination == "emailer"


def test_attachment_bytes_go_to_the_blob_store_and_nowhere_else(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    [data] = blobs.blobs.values()
    assert data.startswith(b"%PDF")
    for message in uow.store.outbox:
        assert b"PDF-1.4" not in message.body and b"JVBERi0" not in message.body  # raw nor base64
    body = json.loads(uow.published("EmailQueued")[0].body)
    assert body["attachments"][0]["sha256"] == next(iter(blobs.blobs))
    assert uow.store.emails[email_id].attachments[0].size == len(data)


def test_same_command_twice_yields_one_email_and_one_event(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    accept(uow, blobs, clock, email_id=email_id)
    assert len(uow.store.emails) == 1
    assert len(uow.published("EmailQueued")) == 1 and len(uow.published("DispatchEmail")) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "a different subject"},
        {"cc": [], "bcc": [{"email": "bob@example.org"}]},  # same people, another kind
        {"metadata": {"order": "1235"}},
        {"attachments": [{"filename": "invoice.pdf", "content": "b3RoZXIgYnl0ZXM="}]},
        {"send_at": "2030-01-01T00:00:00+00:00"},
    ],
)
def test_same_email_id_with_another_content_is_refused_and_the_first_stands(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, change: dict[str, object]
) -> None:
    email_id = accept(uow, blobs, clock)
    stored = uow.store.emails[email_id]
    blobs_before = dict(blobs.blobs)
    with pytest.raises(EmailIdReused) as refused:
        accept(uow, blobs, clock, email_id=email_id, **change)
    assert str(refused.value).startswith(f"email_id {email_id} was already used for a different email")
    assert "content hash" in str(refused.value)
    assert uow.store.emails[email_id] is stored and uow.commits == 1
    assert len(uow.published("EmailQueued")) == 1
    assert blobs.blobs == blobs_before  # the refused command stored no attachment either


def test_a_resend_may_give_an_attachment_by_reference_instead_of_inline(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    [key] = blobs.blobs
    by_reference = [{"filename": "invoice.pdf", "content_type": "application/pdf", "sha256": key}]
    accept(uow, blobs, clock, email_id=email_id, attachments=by_reference)  # the same email
    assert len(uow.published("EmailQueued")) == 1


def test_an_email_stored_without_a_hash_is_compared_by_its_stored_content(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    """Emails stored before migration 0003_f have no content_hash: their stored values decide."""
    email_id = accept(uow, blobs, clock, send_at="2030-01-01T02:00:00+02:00")
    uow.store.emails[email_id].content_hash = None
    accept(uow, blobs, clock, email_id=email_id, send_at="2030-01-01T00:00:00Z")  # the same instant
    with pytest.raises(EmailIdReused):
        accept(uow, blobs, clock, email_id=email_id, subject="changed", send_at="2030-01-01T00:00:00Z")


def test_send_at_in_the_future_waits_for_the_scheduler(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock, send_at=(clock.now() + timedelta(minutes=10)).isoformat())
    assert uow.published("DispatchEmail") == []
    assert schedule_due(uow, clock, POLICY) == 0
    clock.advance(600)
    assert schedule_due(uow, clock, POLICY) == 1
    [dispatch_command] = uow.published("DispatchEmail")
    assert json.loads(dispatch_command.body) == {"email_id": email_id}
    assert dispatch_command.headers["NServiceBus.RelatedTo"] != "incoming-1"  # the scheduler's own


def test_a_reference_to_a_missing_blob_is_invalid(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    with pytest.raises(InvalidMessage, match="no blob"):
        accept(uow, blobs, clock, attachments=[{"filename": "a.txt", "sha256": "b" * 64}])
    assert uow.store.emails == {}


def test_dispatch_accepted_records_delivery_started(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock, reply_to={"email": "help@example.com"}, categories=["orders"])
    dispatch(uow, blobs, provider, clock, email_id)
    [sent] = provider.sent
    assert sent.email_id == email_id and sent.attachments[0].read().startswith(b"%PDF")
    assert sent.from_.email == "shop@example.com" and sent.from_.name == "Shop"
    assert sent.reply_to is not None and sent.reply_to.email == "help@example.com"
    assert [a.email for a in sent.to] == ["ann@example.com"] and [a.email for a in sent.cc] == [
        "bob@example.org"
    ]
    assert (sent.subject, sent.text, sent.categories) == (
        "Your order has shipped", "It is on its way.", ["orders"],
    )  # fmt: skip
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED
    assert len(uow.published("EmailDeliveryStarted")) == 1


def test_a_provider_whose_acceptance_is_delivery_reports_each_recipient(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome.accepted("local-1", delivered=True))
    dispatch(uow, blobs, provider, clock, email_id)
    delivered = [json.loads(m.body)["recipient"] for m in uow.published("EmailRecipientDelivered")]
    assert delivered == ["ann@example.com", "bob@example.org"]


def test_dispatch_twice_calls_the_provider_once(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    dispatch(uow, blobs, provider, clock, email_id)
    assert len(provider.sent) == 1 and len(uow.published("EmailDeliveryStarted")) == 1


def test_rejection_fails_the_email_with_the_providers_reason(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.REJECTED, reason="The from address is invalid", status=400))
    dispatch(uow, blobs, provider, clock, email_id)
    [failed] = uow.published("EmailDeliveryFailed")
    assert json.loads(failed.body)["reason"] == "The from address is invalid"
    assert uow.store.emails[email_id].status is EmailStatus.FAILED


def test_a_missing_blob_at_dispatch_fails_the_email_without_calling_the_provider(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    blobs.blobs.clear()
    dispatch(uow, blobs, provider, clock, email_id)
    assert provider.sent == []
    [failed] = uow.published("EmailDeliveryFailed")
    assert "not in the blob store" in json.loads(failed.body)["reason"]


def test_transient_failure_waits_then_the_scheduler_retries_once(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
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


def test_an_email_scheduled_25_hours_ahead_survives_a_transient_failure(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock, send_at=(clock.now() + timedelta(hours=25)).isoformat())
    clock.advance(timedelta(hours=25).total_seconds())
    assert schedule_due(uow, clock, POLICY) == 1
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="503", status=503))
    dispatch(uow, blobs, provider, clock, email_id)
    assert uow.store.emails[email_id].status is EmailStatus.QUEUED
    assert uow.published("EmailDeliveryFailed") == []
    clock.advance(5)
    assert schedule_due(uow, clock, POLICY) == 1
    dispatch(uow, blobs, provider, clock, email_id)
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED


def test_unknown_outcome_is_not_resent_until_the_wait_is_over(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.UNKNOWN, reason="read timed out"))
    dispatch(uow, blobs, provider, clock, email_id)
    clock.advance(60)
    assert schedule_due(uow, clock, POLICY) == 0
    dispatch(uow, blobs, provider, clock, email_id)  # a stray DispatchEmail: ignored
    assert len(provider.sent) == 1
    clock.advance(POLICY.unknown_outcome_wait.total_seconds())
    assert schedule_due(uow, clock, POLICY) == 1


def test_a_callback_during_the_wait_prevents_any_resend(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
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


def test_an_outcome_that_races_a_concurrent_change_is_recorded_on_fresh_state(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    with uow:
        email = uow.emails.get(email_id)
        assert email is not None
        email.start_attempt(clock.now(), POLICY)
        uow.commit()
    uow.conflicts = 2  # two tries lose the race; the third one wins
    record_outcome(email_id, SendOutcome.accepted("sg-1"), uow, "sendgrid", clock, POLICY)
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED
    assert len(uow.published("EmailDeliveryStarted")) == 1


def test_an_outcome_that_keeps_losing_the_race_raises_for_the_message_to_be_retried(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    with uow:
        email = uow.emails.get(email_id)
        assert email is not None
        email.start_attempt(clock.now(), POLICY)
        uow.commit()
    uow.conflicts = 3
    with pytest.raises(ConcurrencyConflict):
        record_outcome(email_id, SendOutcome.accepted("sg-1"), uow, "sendgrid", clock, POLICY)
    assert uow.store.emails[email_id].status is EmailStatus.DISPATCHING


# ------------------------------------------------------ behind a circuit breaker


def test_open_circuit_postpones_without_calling_the_provider_or_spending_an_attempt(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=1, cooldown=timedelta(seconds=30))
    first, second = accept(uow, blobs, clock), accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="connection refused"))
    dispatch(uow, blobs, breaker, clock, first)
    dispatch(uow, blobs, breaker, clock, second)
    assert len(provider.sent) == 1
    postponed = uow.store.emails[second]
    assert postponed.status is EmailStatus.QUEUED and postponed.attempts == 0
    assert postponed.not_before == postponed.due_at == clock.now() + timedelta(seconds=30)
    assert uow.store.timeline[second][-1] == "postponed"
    assert uow.published("EmailDeliveryFailed") == []


def test_a_postponed_email_is_not_failed_by_the_retry_budget(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=1, cooldown=timedelta(seconds=30))
    first, second = accept(uow, blobs, clock), accept(uow, blobs, clock)
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="connection refused"))
    dispatch(uow, blobs, breaker, clock, first)
    clock.advance(POLICY.budget.total_seconds() + 10)  # the cooldown is over too
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="still down"))
    dispatch(uow, blobs, breaker, clock, first)  # the trial: fails, the circuit opens again
    dispatch(uow, blobs, breaker, clock, second)
    assert uow.store.emails[first].status is EmailStatus.FAILED  # two real attempts, budget spent
    assert uow.store.emails[second].status is EmailStatus.QUEUED
    assert uow.store.emails[second].attempts == 0


def test_a_half_open_trial_that_ends_before_the_provider_call_leaves_the_next_one_free(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=1, cooldown=timedelta(seconds=30))
    first, second, third = (accept(uow, blobs, clock) for _ in range(3))
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="connection refused"))
    dispatch(uow, blobs, breaker, clock, first)  # opens the circuit
    clock.advance(30)
    dispatch(uow, blobs, breaker, clock, "no-such-email")  # ends before the provider call
    stored = dict(blobs.blobs)
    blobs.blobs.clear()
    dispatch(uow, blobs, breaker, clock, second)  # blob missing: ends before the provider call
    assert len(provider.sent) == 1 and uow.store.emails[second].status is EmailStatus.FAILED
    blobs.blobs.update(stored)
    dispatch(uow, blobs, breaker, clock, third)  # the trial: a real provider call
    assert len(provider.sent) == 2
    assert uow.store.emails[third].status is EmailStatus.ACCEPTED


def test_duplicate_reports_apply_once(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    report = _report(email_id, ReportKind.DELIVERED, clock)
    for _ in range(2):
        with uow:
            record_delivery_reports(RecordDeliveryReports(reports=[report, report]), uow, clock)
            uow.commit()
    assert len(uow.published("EmailRecipientDelivered")) == 1


def test_cancel_before_dispatch_then_dispatch_does_nothing(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    with uow:
        cancel_email(CancelEmail(email_id=email_id, reason="user asked"), uow, clock)
        uow.commit()
    dispatch(uow, blobs, provider, clock, email_id)
    assert provider.sent == [] and len(uow.published("EmailCancelled")) == 1


def test_cancel_too_late_changes_nothing(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: RecordingProvider, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock)
    dispatch(uow, blobs, provider, clock, email_id)
    with uow:
        cancel_email(CancelEmail(email_id=email_id, reason="user asked"), uow, clock)
        uow.commit()
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED
    assert uow.published("EmailCancelled") == []


def _report(email_id: str, kind: ReportKind, clock: FakeClock) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid", provider_event_id=f"{email_id}-{kind}", email_id=email_id,
        recipient="ann@example.com", kind=kind, occurred_at=clock.now(),
    )  # fmt: skip


def test_a_request_the_provider_cannot_build_fails_the_email_before_any_attempt(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, provider: RecordingProvider
) -> None:
    """A provider-level fake: the contract now refuses what the real builders refuse (see tests/contract)."""
    email_id = accept(uow, blobs, clock)
    provider.refuse_to_build = ValueError("Header values may not contain linefeed or carriage return")
    dispatch(uow, blobs, provider, clock, email_id)
    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.FAILED and email.attempts == 0 and email.due_at is None
    assert email.last_error == (
        "fake cannot build a request for this email: "
        "ValueError: Header values may not contain linefeed or carriage return"
    )
    [failed] = uow.published("EmailDeliveryFailed")
    assert json.loads(failed.body)["reason"] == email.last_error
    assert provider.sent == [] and "attempt_started" not in uow.store.timeline[email_id]
    assert schedule_due(uow, clock, POLICY) == 0  # nothing left to retry


@pytest.mark.parametrize("email_id", ["order-42", "wh-1a2b-7", "ünïcode ✓", "x" * 300])
@pytest.mark.parametrize("sequence", [1, 2, 10, 12345])
def test_an_event_message_id_is_the_uuid5_of_the_email_and_its_sequence(email_id: str, sequence: int) -> None:
    """Ids already published stay the same: subscribers dedupe by them across versions."""
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{email_id}/{sequence}")
    assert event_message_id(email_id, sequence) == str(expected)
