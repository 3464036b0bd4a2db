"""The circuit breaker is a provider that guards another: what it lets through and what it answers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from handlers.ports import Outcome, OutgoingEmail, SendOutcome
from tests.factories import outgoing_email
from tests.fakes import FakeClock, RecordingProvider

COOLDOWN = timedelta(seconds=30)
DOWN = SendOutcome(Outcome.TRANSIENT, reason="connection refused")


def opened(provider: RecordingProvider, clock: FakeClock, threshold: int = 1) -> CircuitBreaker:
    """A breaker whose circuit just opened (``threshold`` failures in a row)."""
    breaker = CircuitBreaker(provider, clock, threshold=threshold, cooldown=COOLDOWN)
    provider.outcomes.extend([DOWN] * threshold)
    for _ in range(threshold):
        breaker.send(outgoing_email())
    return breaker


def test_closed_it_passes_every_send_through_under_the_providers_name(
    provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=2, cooldown=COOLDOWN)
    provider.outcomes.append(DOWN)
    assert breaker.send(outgoing_email()) == DOWN  # one failure is below the threshold
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED
    assert len(provider.sent) == 2 and breaker.name == provider.name


def test_after_threshold_failures_in_a_row_it_postpones_without_calling_the_provider(
    provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = opened(provider, clock, threshold=3)
    clock.advance(10)
    outcome = breaker.send(outgoing_email())
    assert outcome.outcome is Outcome.POSTPONED
    assert outcome.retry_at == clock.now() - timedelta(seconds=10) + COOLDOWN
    assert outcome.reason is not None and "circuit open" in outcome.reason
    assert len(provider.sent) == 3


def test_a_success_in_between_resets_the_count(provider: RecordingProvider, clock: FakeClock) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=2, cooldown=COOLDOWN)
    provider.outcomes.extend([DOWN, SendOutcome.accepted("1"), DOWN])
    for _ in range(3):
        breaker.send(outgoing_email())
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED


def test_an_unknown_outcome_counts_as_a_failure(provider: RecordingProvider, clock: FakeClock) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=2, cooldown=COOLDOWN)
    provider.outcomes.extend([SendOutcome(Outcome.UNKNOWN, reason="read timed out")] * 2)
    breaker.send(outgoing_email())
    breaker.send(outgoing_email())
    assert breaker.send(outgoing_email()).outcome is Outcome.POSTPONED


def test_a_rejection_is_an_answer_and_keeps_the_circuit_closed(
    provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(provider, clock, threshold=2, cooldown=COOLDOWN)
    provider.outcomes.extend([DOWN, SendOutcome(Outcome.REJECTED, reason="bad from", status=400), DOWN])
    for _ in range(3):
        breaker.send(outgoing_email())
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED


def test_after_the_cooldown_a_trial_success_closes_the_circuit(
    provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = opened(provider, clock)
    clock.advance(COOLDOWN.total_seconds())
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED  # the trial
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED  # closed: goes through
    assert len(provider.sent) == 3


def test_a_trial_failure_reopens_for_another_cooldown(provider: RecordingProvider, clock: FakeClock) -> None:
    breaker = opened(provider, clock, threshold=3)
    clock.advance(COOLDOWN.total_seconds())
    provider.outcomes.append(DOWN)
    assert breaker.send(outgoing_email()) == DOWN  # one failed trial reopens, whatever the threshold
    outcome = breaker.send(outgoing_email())
    assert outcome.outcome is Outcome.POSTPONED and outcome.retry_at == clock.now() + COOLDOWN
    clock.advance(COOLDOWN.total_seconds())
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED  # the next interval's trial


def test_an_unknown_trial_reopens(provider: RecordingProvider, clock: FakeClock) -> None:
    breaker = opened(provider, clock)
    clock.advance(COOLDOWN.total_seconds())
    provider.outcomes.append(SendOutcome(Outcome.UNKNOWN, reason="read timed out"))
    breaker.send(outgoing_email())
    assert breaker.send(outgoing_email()).outcome is Outcome.POSTPONED


def test_sends_while_the_trial_is_in_flight_are_postponed_briefly(
    provider: RecordingProvider, clock: FakeClock
) -> None:
    breaker = opened(provider, clock)
    clock.advance(COOLDOWN.total_seconds())
    during_trial: list[SendOutcome] = []

    class SlowProvider(RecordingProvider):
        def send(self, email: OutgoingEmail) -> SendOutcome:
            during_trial.append(breaker.send(outgoing_email("other")))  # arrives mid-trial
            return provider.send(email)

    breaker.provider = SlowProvider()
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED
    [other] = during_trial
    assert other.outcome is Outcome.POSTPONED and other.retry_at == clock.now() + breaker.trial_wait


def test_a_trial_that_raises_settles_the_breaker_too(provider: RecordingProvider, clock: FakeClock) -> None:
    breaker = opened(provider, clock)
    clock.advance(COOLDOWN.total_seconds())

    class Broken(RecordingProvider):
        def send(self, email: OutgoingEmail) -> SendOutcome:
            raise RuntimeError("a bug in the adapter")

    breaker.provider = Broken()
    with pytest.raises(RuntimeError):
        breaker.send(outgoing_email())
    breaker.provider = provider
    assert breaker.send(outgoing_email()).outcome is Outcome.POSTPONED  # reopened, not stuck in a trial
    clock.advance(COOLDOWN.total_seconds())
    assert breaker.send(outgoing_email()).outcome is Outcome.ACCEPTED
