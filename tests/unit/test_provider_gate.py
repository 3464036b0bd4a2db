"""The provider gate: a pause, a configuration error and a drain rate that hold for every worker at once.

Two gates over one ``FakeProviderState`` stand for two workers sharing the database.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import DispatchEmail
from emailer.adapters.providers.gate import CONFIGURATION, RATE_LIMITED, DrainRate, ProviderGate
from emailer.domain import EmailStatus, RetryPolicy
from emailer.endpoint.scheduler import schedule_due
from handlers.dispatch_email import dispatch_email
from handlers.ports import MessageContext, Outcome, SendOutcome
from handlers.send_email import send_email as handle_send_email
from tests.factories import outgoing_email, send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeProviderState, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))
JITTER = timedelta(seconds=1)
PROBE_WAIT = timedelta(seconds=60)
RATE_LIMITED_429 = SendOutcome(
    Outcome.TRANSIENT, reason="SendGrid rate limit (HTTP 429)", status=429, retry_after=timedelta(seconds=20)
)
REFUSED_KEY = SendOutcome(Outcome.MISCONFIGURED, reason="SendGrid refused the API key (HTTP 401)", status=401)


@pytest.fixture
def store() -> FakeProviderState:
    return FakeProviderState()


def gate(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock, rate: float = 0.0
) -> ProviderGate:
    return ProviderGate(provider, store, clock, rate=DrainRate.of(rate), probe_wait=PROBE_WAIT, jitter=JITTER)


# ------------------------------------------------------------ the gate alone


def test_a_429_pauses_the_provider_for_every_worker_until_its_retry_after(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    one, other = gate(provider, store, clock), gate(provider, store, clock)
    provider.outcomes.append(RATE_LIMITED_429)
    assert one.send(outgoing_email()) == RATE_LIMITED_429
    pause_ends = clock.now() + timedelta(seconds=20)
    for seconds in (0, 5, 19.9):
        clock.current = pause_ends - timedelta(seconds=20 - seconds)
        outcome = other.send(outgoing_email())
        assert outcome.outcome is Outcome.POSTPONED  # not tried: no attempt spent
        assert outcome.retry_at is not None and pause_ends <= outcome.retry_at <= pause_ends + JITTER
    assert len(provider.sent) == 1  # nobody called the provider before the Retry-After passed
    clock.current = pause_ends
    assert other.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert store.read("fake").reason == RATE_LIMITED


def test_a_later_429_never_shortens_a_pause(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    g = gate(provider, store, clock)
    provider.outcomes.append(RATE_LIMITED_429)
    g.send(outgoing_email())
    store.pause("fake", clock.now() + timedelta(seconds=3), RATE_LIMITED, "shorter", clock.now())
    assert store.read("fake").paused_until == clock.now() + timedelta(seconds=20)


def test_a_refused_api_key_stops_dispatch_for_every_worker_and_one_probe_resumes_it(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    one, other = gate(provider, store, clock), gate(provider, store, clock)
    provider.outcomes.append(REFUSED_KEY)
    outcome = one.send(outgoing_email())
    assert outcome.outcome is Outcome.MISCONFIGURED
    assert outcome.retry_at is not None and outcome.retry_at >= clock.now() + PROBE_WAIT
    assert store.read("fake").misconfigured
    clock.advance(30)
    assert other.send(outgoing_email()).outcome is Outcome.POSTPONED
    assert len(provider.sent) == 1
    clock.advance(30)  # the probe is due: the first sender takes it, everyone else waits for it
    provider.outcomes.append(REFUSED_KEY)
    assert one.send(outgoing_email()).outcome is Outcome.MISCONFIGURED
    assert other.send(outgoing_email()).outcome is Outcome.POSTPONED
    assert len(provider.sent) == 2 and store.read("fake").misconfigured
    clock.advance(60)  # the key was fixed meanwhile: the next probe is accepted and dispatch resumes
    assert other.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert not store.read("fake").misconfigured
    assert one.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert len(provider.sent) == 4


def test_a_worker_that_starts_may_probe_a_configuration_error_at_once(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    g = gate(provider, store, clock)
    provider.outcomes.append(REFUSED_KEY)
    g.send(outgoing_email())
    store.reprobe("fake", clock.now())  # what Worker.start does
    assert g.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert store.read("fake").reason is None


def test_the_drain_rate_is_shared_and_says_when_to_come_back(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    one, other = gate(provider, store, clock, rate=2), gate(provider, store, clock, rate=2)
    assert store.allowance("fake", clock.now(), one.rate, 100) == 2  # a burst of one second's worth
    assert one.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert other.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert store.allowance("fake", clock.now(), one.rate, 100) == 0
    third = one.send(outgoing_email())
    assert third.outcome is Outcome.POSTPONED and len(provider.sent) == 2
    assert third.retry_at is not None and clock.now() + timedelta(seconds=0.5) <= third.retry_at
    clock.advance(0.5)
    assert store.allowance("fake", clock.now(), one.rate, 100) == 1
    assert other.send(outgoing_email()).outcome is Outcome.ACCEPTED
    clock.advance(10)
    sent = sum(one.send(outgoing_email()).outcome is Outcome.ACCEPTED for _ in range(10))
    assert sent == 2  # never more than the burst at one instant, however long it was quiet


def test_when_the_shared_state_cannot_be_read_nothing_is_sent_and_the_email_waits(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    store.unavailable = True
    outcome = gate(provider, store, clock).send(outgoing_email())
    assert outcome.outcome is Outcome.POSTPONED and provider.sent == []


# ------------------------------------------------------------ with the handlers


def accept(uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, correlation: str) -> str:
    command = send_email()
    with uow:
        uow.context = MessageContext(
            f"in-{correlation}", "SendEmail", {"NServiceBus.CorrelationId": correlation}
        )
        handle_send_email(command, uow, blobs, clock, POLICY)
        uow.commit()
    return command.email_id


def test_a_refused_key_fails_no_email_even_past_the_retry_budget(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    uow, blobs, g = FakeUnitOfWork(clock), FakeBlobStore(), gate(provider, store, clock)
    email_id = accept(uow, clock, blobs, "corr-1")
    for _ in range(30):  # a day and more of probes, every one refused
        provider.outcomes.append(REFUSED_KEY)
        dispatch_email(DispatchEmail(email_id=email_id), uow, blobs, g, clock, POLICY)
        clock.current = uow.store.emails[email_id].not_before or clock.now()
        clock.advance(POLICY.budget.total_seconds() / 20)
    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.QUEUED and email.attempts == 0
    assert uow.published("EmailDeliveryFailed") == []
    dispatch_email(DispatchEmail(email_id=email_id), uow, blobs, g, clock, POLICY)  # the key is fixed
    assert uow.store.emails[email_id].status is EmailStatus.ACCEPTED


def test_a_scheduler_pass_wakes_no_more_emails_than_the_provider_would_take(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    uow, blobs, g = FakeUnitOfWork(clock), FakeBlobStore(), gate(provider, store, clock, rate=3)
    ids = [accept(uow, clock, blobs, f"corr-{i}") for i in range(10)]
    for email_id in ids:  # an outage: every email is waiting for the same moment
        uow.store.emails[email_id].due_at = clock.now()
    uow.take_committed()

    def allowance(limit: int) -> int:
        return store.allowance("fake", clock.now(), g.rate, limit)

    assert schedule_due(uow, clock, POLICY, allowance=allowance) == 3
    store.pause("fake", clock.now() + timedelta(seconds=5), RATE_LIMITED, "429", clock.now())
    assert schedule_due(uow, clock, POLICY, allowance=allowance) == 0


def test_after_a_scheduled_retry_every_message_carries_the_commands_correlation_id(
    provider: RecordingProvider, store: FakeProviderState, clock: FakeClock
) -> None:
    """Fails before emails kept their command's ids: the scheduler's DispatchEmail had a fresh one."""
    uow, blobs = FakeUnitOfWork(clock), FakeBlobStore()
    email_id = accept(uow, clock, blobs, "corr-client")
    provider.outcomes.append(SendOutcome(Outcome.TRANSIENT, reason="HTTP 503", status=503))
    dispatch_email(DispatchEmail(email_id=email_id), uow, blobs, provider, clock, POLICY)
    clock.advance(60)
    uow.take_committed()
    assert schedule_due(uow, clock, POLICY) == 1
    [retry] = uow.take_committed()
    assert retry.message_type == "DispatchEmail"
    # the worker handles the scheduler's DispatchEmail under that message's own context
    dispatch_email(
        DispatchEmail(email_id=email_id), _under(uow, retry.headers), blobs, provider, clock, POLICY
    )
    [started] = [m for m in uow.take_committed() if m.message_type == "EmailDeliveryStarted"]
    assert retry.headers["NServiceBus.CorrelationId"] == "corr-client"
    assert started.headers["NServiceBus.CorrelationId"] == "corr-client"
    assert started.headers["NServiceBus.ConversationId"] == retry.headers["NServiceBus.ConversationId"]


def _under(uow: FakeUnitOfWork, headers: object) -> FakeUnitOfWork:
    assert isinstance(headers, dict)
    uow.context = MessageContext(headers["NServiceBus.MessageId"], "DispatchEmail", headers)
    return uow


def test_a_refused_key_is_recorded_as_misconfigured(store: FakeProviderState, clock: FakeClock) -> None:
    store.pause("sendgrid", clock.now() + PROBE_WAIT, CONFIGURATION, "HTTP 401", clock.now())
    [state] = store.read_all()
    assert state.misconfigured and state.paused_at == clock.now()
