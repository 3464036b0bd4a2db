"""The crash-safe send: an unknown outcome is settled from the provider (callback or lookup), not resent.

The crash between the provider's acceptance and our commit is played by a
provider that accepts and then raises (the worker's death, as far as the
handler can tell): the attempt stays marked as under way, nothing recorded.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import DeliveryReport, DispatchEmail, RecordDeliveryReports, ReportKind
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.adapters.providers.file import FileProvider
from emailer.domain import EmailStatus, RetryPolicy
from emailer.endpoint.scheduler import schedule_due
from handlers.dispatch_email import dispatch_email
from handlers.ports import MessageContext, Outcome, SendOutcome, lookup_of
from handlers.reconcile import reconcile_unknown_outcomes
from handlers.record_delivery_reports import record_delivery_reports
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, LookingUpProvider, RecordingProvider

POLICY = RetryPolicy(
    jitter=0.0,
    resend_needs_lookup=True,
    unknown_outcome_wait=timedelta(seconds=60),
    reconcile_after=timedelta(seconds=5),
    reconcile_grace=timedelta(seconds=30),
)


class Crash(Exception):
    """The worker died here."""


def crash() -> None:
    raise Crash


@pytest.fixture
def provider() -> LookingUpProvider:
    return LookingUpProvider()


def queued(uow: FakeUnitOfWork, clock: FakeClock, policy: RetryPolicy = POLICY) -> str:
    command = send_email(attachments=[])
    with uow:
        uow.context = MessageContext("in-1", "SendEmail")
        handle_send_email(command, uow, FakeBlobStore(), clock, policy)
        uow.commit()
    return command.email_id


def dispatch_and_crash(
    uow: FakeUnitOfWork,
    provider: RecordingProvider,
    clock: FakeClock,
    email_id: str,
    policy: RetryPolicy = POLICY,
) -> None:
    """The provider takes the request, then the worker dies before recording what it said."""
    with pytest.raises(Crash):
        dispatch_email(DispatchEmail(email_id=email_id), uow, FakeBlobStore(), provider, clock, policy, crash)


def reconcile(uow: FakeUnitOfWork, provider: LookingUpProvider, clock: FakeClock) -> dict[str, int]:
    return dict(reconcile_unknown_outcomes(uow, provider.lookup, provider.name, clock, POLICY, limit=10))


def status(uow: FakeUnitOfWork, email_id: str) -> EmailStatus:
    return uow.store.emails[email_id].status


def wake_due(uow: FakeUnitOfWork, clock: FakeClock, policy: RetryPolicy = POLICY) -> int:
    return schedule_due(uow, clock, policy)


def test_a_crash_after_acceptance_is_settled_by_the_lookup_with_no_second_request(
    uow: FakeUnitOfWork, provider: LookingUpProvider, clock: FakeClock
) -> None:
    email_id = queued(uow, clock)
    dispatch_and_crash(uow, provider, clock, email_id)
    assert status(uow, email_id) is EmailStatus.DISPATCHING
    assert reconcile(uow, provider, clock) == {}  # too young: a live worker may still be waiting
    clock.advance(5)
    assert reconcile(uow, provider, clock) == {"accepted": 1}
    assert status(uow, email_id) is EmailStatus.ACCEPTED
    assert [m.message_type for m in uow.published("EmailDeliveryStarted")] == ["EmailDeliveryStarted"]
    clock.advance(3600)
    wake_due(uow, clock)
    assert len(provider.sent) == 1
    assert uow.store.timeline[email_id][-2:] == ["reconciled", "accepted"]


def test_none_at_the_provider_resends_only_after_the_grace_period(
    uow: FakeUnitOfWork, provider: LookingUpProvider, clock: FakeClock
) -> None:
    email_id = queued(uow, clock)
    provider.outcomes.append(SendOutcome(Outcome.UNKNOWN, reason="read timed out"))
    dispatch_email(DispatchEmail(email_id=email_id), uow, FakeBlobStore(), provider, clock, POLICY)
    provider.holds.clear()  # it never arrived (or the provider's records lag behind)
    clock.advance(10)
    assert reconcile(uow, provider, clock) == {"waiting": 1}
    assert status(uow, email_id) is EmailStatus.DISPATCHING
    clock.advance(20)  # 30 s after the attempt started: the grace is over
    assert reconcile(uow, provider, clock) == {"requeued": 1}
    assert status(uow, email_id) is EmailStatus.QUEUED
    assert wake_due(uow, clock) == 1
    dispatch_email(DispatchEmail(email_id=email_id), uow, FakeBlobStore(), provider, clock, POLICY)
    assert status(uow, email_id) is EmailStatus.ACCEPTED
    assert len(provider.sent) == 2


def test_with_the_lookup_on_the_wait_running_out_never_resends_blind(
    uow: FakeUnitOfWork, provider: LookingUpProvider, clock: FakeClock
) -> None:
    email_id = queued(uow, clock)
    dispatch_and_crash(uow, provider, clock, email_id)
    provider.unavailable = ["HTTP 429"] * 3
    for _ in range(3):
        clock.advance(POLICY.unknown_outcome_wait.total_seconds() + 1)
        assert reconcile(uow, provider, clock) == {"unavailable": 1}
        assert wake_due(uow, clock) == 0
    assert status(uow, email_id) is EmailStatus.DISPATCHING
    assert len(provider.sent) == 1


def test_without_a_lookup_the_callback_wait_stays_the_rule(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    policy = RetryPolicy(jitter=0.0, unknown_outcome_wait=timedelta(seconds=60))
    provider = RecordingProvider()
    email_id = queued(uow, clock, policy)
    dispatch_and_crash(uow, provider, clock, email_id, policy)
    assert lookup_of(provider) is None
    clock.advance(59)
    assert wake_due(uow, clock, policy) == 0
    clock.advance(2)
    assert wake_due(uow, clock, policy) == 1
    assert status(uow, email_id) is EmailStatus.QUEUED


def test_any_callback_settles_the_crash_as_accepted_and_nothing_is_sent_again(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    policy = RetryPolicy(jitter=0.0, unknown_outcome_wait=timedelta(seconds=60))
    provider = RecordingProvider()
    email_id = queued(uow, clock, policy)
    dispatch_and_crash(uow, provider, clock, email_id, policy)
    report = DeliveryReport(
        provider="sendgrid",
        provider_event_id="ev-1",
        email_id=email_id,
        recipient="ann@example.com",
        kind=ReportKind.DELIVERED,
        occurred_at=clock.now(),
        provider_message_id="sg-1",
    )
    with uow:
        record_delivery_reports(RecordDeliveryReports(reports=[report]), uow, clock)
        uow.commit()
    assert status(uow, email_id) is EmailStatus.ACCEPTED
    clock.advance(3600)
    assert wake_due(uow, clock, policy) == 0
    dispatch_email(DispatchEmail(email_id=email_id), uow, FakeBlobStore(), provider, clock, policy)
    assert len(provider.sent) == 1


def test_a_lookup_of_an_email_that_moved_on_changes_nothing(
    uow: FakeUnitOfWork, provider: LookingUpProvider, clock: FakeClock
) -> None:
    email_id = queued(uow, clock)
    dispatch_and_crash(uow, provider, clock, email_id)
    clock.advance(40)
    with uow:
        email = uow.emails.get(email_id)
        assert email is not None
        assert email.reconcile(email.attempts + 1, False, "x", None, clock.now(), POLICY) == "waiting"
        assert email.reconcile(email.attempts, True, "x", "m-1", clock.now(), POLICY) == "accepted"
        assert email.reconcile(email.attempts, False, "x", None, clock.now(), POLICY) == "waiting"


def test_the_breaker_passes_the_lookup_through_and_the_file_provider_answers_from_its_files(
    tmp_path: object, clock: FakeClock
) -> None:
    from pathlib import Path

    from tests.factories import outgoing_email

    files = FileProvider(Path(str(tmp_path)))
    guarded = CircuitBreaker(files, clock)
    lookup = lookup_of(guarded)
    assert lookup is not None
    assert lookup("order-42").held is False
    files.send(outgoing_email("order-42", bcc=[]))
    answer = lookup("order-42")
    assert answer.held is True and answer.provider_message_id == "order-42@emailer.local"
    assert lookup_of(CircuitBreaker(RecordingProvider(), clock)) is None
