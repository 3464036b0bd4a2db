"""The Email aggregate: its transitions, its guards and the events it emits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import (
    AttachmentRef,
    DeliveryReport,
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailQueued,
    EmailRecipientDeferred,
    EmailRecipientDelivered,
    EmailRecipientDeliveryFailed,
    EmailRecipientOpened,
    ReportKind,
)
from emailer.domain import Email, EmailStatus, IllegalTransition, RecipientStatus, RetryPolicy
from tests.factories import send_email

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(jitter=0.0)


def queued(**changes: object) -> Email:
    command = send_email(attachments=[], **changes)
    return Email.queue(command, [], T0, POLICY)


def event_types(email: Email) -> list[str]:
    return [type(e).__name__ for _, e in email.pull_events()]


def report(kind: ReportKind, at: datetime, recipient: str = "ann@example.com", n: int = 1) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid", provider_event_id=f"ev-{kind}-{n}", email_id="x", recipient=recipient,
        kind=kind, occurred_at=at,
    )  # fmt: skip


def test_queue_emits_email_queued_with_refs_not_bytes() -> None:
    ref = AttachmentRef(filename="a.pdf", sha256="a" * 64, size=3)
    email = Email.queue(send_email(), [ref], T0, POLICY)
    [(seq, event)] = email.pull_events()
    assert seq == 1 and isinstance(event, EmailQueued)
    assert event.attachments == [ref] and event.metadata == {"order": "1234"}
    assert email.status is EmailStatus.QUEUED and email.is_due(T0)
    assert [r.address for r in email.recipients] == ["ann@example.com", "bob@example.org"]


def test_send_at_in_the_future_is_not_due_until_then() -> None:
    email = queued(send_at=(T0 + timedelta(hours=1)).isoformat())
    assert not email.is_due(T0)
    assert email.is_due(T0 + timedelta(hours=1))
    with pytest.raises(IllegalTransition):
        email.start_attempt(T0, POLICY)


def test_accepted_path() -> None:
    email = queued()
    email.pull_events()
    assert email.start_attempt(T0, POLICY) == 1
    assert email.status is EmailStatus.DISPATCHING
    email.delivery_started("sendgrid", "sg-1", T0)
    [(_, started)] = email.pull_events()
    assert isinstance(started, EmailDeliveryStarted) and started.provider_message_id == "sg-1"
    assert email.status is EmailStatus.ACCEPTED and email.due_at is None


def test_illegal_transitions_raise() -> None:
    email = queued()
    with pytest.raises(IllegalTransition):
        email.give_up_waiting(T0)  # only a dispatching email waits for a callback
    email.start_attempt(T0, POLICY)
    email.delivery_started("p", "1", T0)
    with pytest.raises(IllegalTransition):
        email.cancel("too late", T0)
    with pytest.raises(IllegalTransition):
        email.start_attempt(T0, POLICY)


def test_transient_failure_backs_off_and_honours_retry_after() -> None:
    email = queued()
    email.start_attempt(T0, POLICY)
    email.attempt_failed("p", "503", T0, POLICY)
    assert email.status is EmailStatus.QUEUED
    assert email.not_before == T0 + POLICY.first_delay
    email.start_attempt(email.not_before, POLICY)
    email.attempt_failed("p", "429", T0, POLICY, retry_after=timedelta(minutes=7))
    assert email.not_before == T0 + timedelta(minutes=7)


def test_retry_budget_spent_fails_the_email() -> None:
    email = queued()
    email.pull_events()
    email.start_attempt(T0, POLICY)
    late = T0 + POLICY.budget - timedelta(seconds=1)
    email.attempt_failed("p", "503 again", late, POLICY)
    [(_, failed)] = email.pull_events()
    assert isinstance(failed, EmailDeliveryFailed) and "retry budget" in failed.reason
    assert email.status is EmailStatus.FAILED


def test_unknown_outcome_waits_for_a_callback_then_requeues() -> None:
    email = queued()
    email.start_attempt(T0, POLICY)
    email.attempt_outcome_unknown("p", "timed out after sending", T0)
    assert email.status is EmailStatus.DISPATCHING
    assert email.due_at == T0 + POLICY.unknown_outcome_wait
    email.give_up_waiting(email.due_at)
    assert email.is_due(email.due_at)


def test_a_callback_settles_an_unknown_outcome_as_accepted() -> None:
    email = queued()
    email.pull_events()
    email.start_attempt(T0, POLICY)
    email.attempt_outcome_unknown("sendgrid", "timeout", T0)
    email.apply_report(report(ReportKind.PROCESSED, T0), T0)
    assert email.status is EmailStatus.ACCEPTED
    assert event_types(email) == ["EmailDeliveryStarted"]


def test_out_of_order_and_duplicate_reports_settle_right() -> None:
    email = queued()
    email.start_attempt(T0, POLICY)
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    t = T0 + timedelta(minutes=1)
    email.apply_report(report(ReportKind.DELIVERED, t + timedelta(seconds=5)), t)
    email.apply_report(report(ReportKind.DEFERRED, t), t)  # older, arrives later: ignored
    email.apply_report(report(ReportKind.DELIVERED, t + timedelta(seconds=5), n=2), t)  # repeat
    assert email.recipients[0].status is RecipientStatus.DELIVERED
    assert event_types(email) == ["EmailRecipientDelivered"]


def test_open_before_delivered_implies_delivery_once() -> None:
    email = queued()
    email.start_attempt(T0, POLICY)
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    email.apply_report(report(ReportKind.OPENED, T0 + timedelta(minutes=2)), T0)
    email.apply_report(report(ReportKind.DELIVERED, T0 + timedelta(minutes=1)), T0)
    events = [e for _, e in email.pull_events()]
    assert [type(e) for e in events] == [EmailRecipientDelivered, EmailRecipientOpened]


def test_async_bounce_after_delivery_wins_and_deferral_emits() -> None:
    email = queued()
    email.start_attempt(T0, POLICY)
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    email.apply_report(
        report(ReportKind.DEFERRED, T0 + timedelta(seconds=1), recipient="bob@example.org"), T0
    )
    email.apply_report(report(ReportKind.DELIVERED, T0 + timedelta(seconds=2)), T0)
    email.apply_report(report(ReportKind.BOUNCED, T0 + timedelta(seconds=3)), T0)
    events = [e for _, e in email.pull_events()]
    assert [type(e) for e in events] == [
        EmailRecipientDeferred, EmailRecipientDelivered, EmailRecipientDeliveryFailed,
    ]  # fmt: skip
    assert email.recipients[0].status is RecipientStatus.FAILED
    assert email.recipients[1].status is RecipientStatus.DEFERRED


def test_cancel_only_while_queued_and_twice_is_a_no_op() -> None:
    email = queued()
    email.pull_events()
    email.cancel("changed my mind", T0)
    email.cancel("again", T0)
    assert event_types(email) == ["EmailCancelled"]
    assert email.due_at is None
