"""The Email aggregate: its transitions, its guards and the events and commands it emits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import (
    AttachmentRef,
    DeliveryReport,
    DispatchEmail,
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailQueued,
    EmailRecipientDeferred,
    EmailRecipientDelivered,
    EmailRecipientDeliveryFailed,
    EmailRecipientOpened,
    ReportKind,
)
from emailer.domain import (
    Attachment,
    Email,
    EmailStatus,
    IllegalTransition,
    Mailbox,
    Outcome,
    Recipient,
    RecipientStatus,
    RetryPolicy,
    SendOutcome,
)
from tests.factories import send_email

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(jitter=0.0)


def queued(**changes: object) -> Email:
    command = send_email(attachments=[], **changes)
    return Email.queue(command, [], T0)


def dispatching(**changes: object) -> Email:
    email = queued(**changes)
    email.start_attempt(email.not_before or T0, POLICY)
    email.pull_events()
    return email


def event_types(email: Email) -> list[str]:
    return [type(e).__name__ for _, e in email.pull_events()]


def status(email: Email) -> EmailStatus:
    """The email's status, read afresh (mypy would otherwise keep a narrowed status across calls)."""
    return email.status


def timeline(email: Email) -> list[str]:
    return [t.kind for t in email.new_timeline]


def report(kind: ReportKind, at: datetime, recipient: str = "ann@example.com", n: int = 1) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid", provider_event_id=f"ev-{kind}-{n}", email_id="x", recipient=recipient,
        kind=kind, occurred_at=at,
    )  # fmt: skip


# ----------------------------------------------------------------------- queueing


def test_queue_keeps_plain_values_and_emits_email_queued_with_refs_not_bytes() -> None:
    attachment = Attachment(filename="a.pdf", sha256="a" * 64, size=3, content_type="application/pdf")
    email = Email.queue(send_email(reply_to={"email": "help@example.com"}), [attachment], T0)
    [(seq, event)] = email.pull_events()
    assert seq == 1 and isinstance(event, EmailQueued)
    assert event.attachments == [
        AttachmentRef(filename="a.pdf", sha256="a" * 64, size=3, content_type="application/pdf")
    ]
    assert event.metadata == {"order": "1234"}
    assert email.attachments == [attachment]
    assert email.content.from_ == Mailbox("shop@example.com", "Shop")
    assert email.content.reply_to == Mailbox("help@example.com")
    assert email.content.subject == "Your order has shipped" and email.content.categories == ()
    assert email.status is EmailStatus.QUEUED and email.is_due(T0)
    assert [r.address for r in email.recipients] == ["ann@example.com", "bob@example.org"]


def test_send_at_in_the_future_is_not_due_until_then() -> None:
    email = queued(send_at=(T0 + timedelta(hours=1)).isoformat())
    assert not email.is_due(T0)
    assert email.is_due(T0 + timedelta(hours=1))
    with pytest.raises(IllegalTransition):
        email.start_attempt(T0, POLICY)


# -------------------------------------------------------------------------- waking


def test_a_due_email_wakes_by_asking_for_its_dispatch_once_per_lease() -> None:
    email = queued()
    assert email.wake(T0, POLICY) is True
    assert email.pull_commands() == [DispatchEmail(email_id=email.id)]
    assert email.due_at == T0 + POLICY.dispatch_lease
    assert email.wake(T0 + timedelta(seconds=1), POLICY) is False  # leased
    assert email.wake(T0 + POLICY.dispatch_lease, POLICY) is True  # lease over: ask again
    assert len(email.pull_commands()) == 1


def test_an_email_scheduled_later_does_not_wake_before_send_at() -> None:
    email = queued(send_at=(T0 + timedelta(minutes=10)).isoformat())
    assert email.wake(T0, POLICY) is False and email.pull_commands() == []
    assert email.wake(T0 + timedelta(minutes=10), POLICY) is True


def test_waking_after_an_unknown_outcome_requeues_only_once_the_wait_is_over() -> None:
    email = dispatching()
    email.record_outcome(SendOutcome(Outcome.UNKNOWN, reason="read timed out"), "p", T0, POLICY)
    assert email.wake(T0 + timedelta(minutes=1), POLICY) is False
    over = T0 + POLICY.unknown_outcome_wait
    assert email.wake(over, POLICY) is True
    assert email.status is EmailStatus.QUEUED and "requeued" in timeline(email)


def test_a_settled_email_cannot_wake() -> None:
    email = dispatching()
    email.delivery_started("p", "1", T0)
    with pytest.raises(IllegalTransition):
        email.wake(T0, POLICY)


# ------------------------------------------------------------------------ outcomes


def test_accepted_path() -> None:
    email = queued()
    email.pull_events()
    assert email.start_attempt(T0, POLICY) == 1
    assert email.status is EmailStatus.DISPATCHING
    email.record_outcome(SendOutcome.accepted("sg-1"), "sendgrid", T0, POLICY)
    [(_, started)] = email.pull_events()
    assert isinstance(started, EmailDeliveryStarted) and started.provider_message_id == "sg-1"
    assert status(email) is EmailStatus.ACCEPTED and email.due_at is None


def test_acceptance_that_is_delivery_delivers_every_recipient() -> None:
    email = dispatching()
    email.record_outcome(SendOutcome.accepted("local-1", delivered=True), "file", T0, POLICY)
    assert event_types(email) == [
        "EmailDeliveryStarted", "EmailRecipientDelivered", "EmailRecipientDelivered",
        "EmailDeliveryCompleted",
    ]  # fmt: skip
    assert {r.status for r in email.recipients} == {RecipientStatus.DELIVERED}


def test_a_rejection_fails_the_email_for_good() -> None:
    email = dispatching()
    outcome = SendOutcome(Outcome.REJECTED, reason="The from address is invalid", status=400)
    email.record_outcome(outcome, "sendgrid", T0, POLICY)
    [(_, failed)] = email.pull_events()
    assert isinstance(failed, EmailDeliveryFailed)
    assert failed.reason == "The from address is invalid" and failed.provider_status == 400
    assert failed.permanent  # the contract's field, always true
    assert email.status is EmailStatus.FAILED and email.due_at is None


def test_transient_failure_backs_off_and_honours_retry_after() -> None:
    email = dispatching()
    email.record_outcome(SendOutcome(Outcome.TRANSIENT, reason="503"), "p", T0, POLICY)
    assert email.status is EmailStatus.QUEUED
    assert email.not_before == T0 + POLICY.first_delay and email.last_error == "503"
    email.start_attempt(email.not_before, POLICY)
    outcome = SendOutcome(Outcome.TRANSIENT, reason="429", retry_after=timedelta(minutes=7))
    email.record_outcome(outcome, "p", T0, POLICY)
    assert email.not_before == T0 + timedelta(minutes=7)


def test_retry_budget_spent_fails_the_email() -> None:
    email = dispatching()
    late = T0 + POLICY.budget - timedelta(seconds=1)
    email.attempt_failed("p", "503 again", late, POLICY)
    [(_, failed)] = email.pull_events()
    assert isinstance(failed, EmailDeliveryFailed) and "retry budget" in failed.reason
    assert email.status is EmailStatus.FAILED


def test_the_retry_budget_counts_from_send_at() -> None:
    send_at = T0 + timedelta(hours=25)
    email = dispatching(send_at=send_at.isoformat())
    email.attempt_failed("p", "503", send_at, POLICY)
    assert email.status is EmailStatus.QUEUED and email.pull_events() == []
    email.start_attempt(email.not_before or send_at, POLICY)
    email.attempt_failed("p", "503 still", send_at + POLICY.budget - timedelta(seconds=1), POLICY)
    assert status(email) is EmailStatus.FAILED


def test_unknown_outcome_waits_for_a_callback_then_requeues() -> None:
    email = dispatching()
    email.record_outcome(SendOutcome(Outcome.UNKNOWN, reason="timed out after sending"), "p", T0, POLICY)
    assert email.status is EmailStatus.DISPATCHING
    assert email.due_at == T0 + POLICY.unknown_outcome_wait
    email.give_up_waiting(email.due_at)
    assert email.is_due(email.due_at)


def test_a_postponed_attempt_spends_neither_an_attempt_nor_the_budget() -> None:
    email = dispatching()  # the attempt was marked as under way, then the provider declined to try
    long_after = T0 + 2 * POLICY.budget
    until = long_after + timedelta(seconds=30)
    email.record_outcome(SendOutcome.postponed(until, "circuit open"), "p", long_after, POLICY)
    assert email.status is EmailStatus.QUEUED and email.attempts == 0
    assert email.not_before == email.due_at == until
    assert timeline(email)[-1] == "postponed" and email.pull_events() == []


def test_an_outcome_after_a_callback_settled_the_email_changes_nothing() -> None:
    email = dispatching()
    email.apply_report(report(ReportKind.PROCESSED, T0), T0)
    email.pull_events()
    for outcome in (
        SendOutcome(Outcome.TRANSIENT, reason="503"),
        SendOutcome(Outcome.UNKNOWN),
        SendOutcome(Outcome.REJECTED, reason="late"),
        SendOutcome.accepted("sg-1"),
    ):
        email.record_outcome(outcome, "sendgrid", T0, POLICY)
    assert email.status is EmailStatus.ACCEPTED and email.pull_events() == []


@pytest.mark.parametrize(
    "outcome",
    [
        SendOutcome(Outcome.TRANSIENT, reason="503"),
        SendOutcome(Outcome.UNKNOWN, reason="timeout"),
        SendOutcome(Outcome.REJECTED, reason="bad"),
        SendOutcome.postponed(T0, "circuit open"),
    ],
    ids=lambda o: o.outcome.value,
)
def test_an_outcome_without_an_attempt_under_way_is_illegal(outcome: SendOutcome) -> None:
    email = queued()
    with pytest.raises(IllegalTransition):
        email.record_outcome(outcome, "p", T0, POLICY)
    assert email.status is EmailStatus.QUEUED


def test_illegal_transitions_raise() -> None:
    email = queued()
    with pytest.raises(IllegalTransition):
        email.give_up_waiting(T0)  # only a dispatching email waits for a callback
    with pytest.raises(IllegalTransition):
        email.attempt_failed("p", "503", T0, POLICY)
    with pytest.raises(IllegalTransition):
        email.attempt_outcome_unknown("p", "timeout", T0)
    email.start_attempt(T0, POLICY)
    email.delivery_started("p", "1", T0)
    with pytest.raises(IllegalTransition):
        email.cancel("too late", T0)
    with pytest.raises(IllegalTransition):
        email.start_attempt(T0, POLICY)


def test_only_a_postponed_outcome_says_when_to_try_again() -> None:
    with pytest.raises(ValueError, match="retry_at"):
        SendOutcome(Outcome.POSTPONED)
    with pytest.raises(ValueError, match="retry_at"):
        SendOutcome(Outcome.TRANSIENT, retry_at=T0)


# ------------------------------------------------------------------------ reports


def test_a_callback_settles_an_unknown_outcome_as_accepted() -> None:
    email = dispatching()
    email.attempt_outcome_unknown("sendgrid", "timeout", T0)
    email.apply_report(report(ReportKind.PROCESSED, T0), T0)
    assert email.status is EmailStatus.ACCEPTED
    assert event_types(email) == ["EmailDeliveryStarted"]


def test_out_of_order_and_duplicate_reports_settle_right() -> None:
    email = dispatching()
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    t = T0 + timedelta(minutes=1)
    email.apply_report(report(ReportKind.DELIVERED, t + timedelta(seconds=5)), t)
    email.apply_report(report(ReportKind.DEFERRED, t), t)  # older, arrives later: ignored
    email.apply_report(report(ReportKind.DELIVERED, t + timedelta(seconds=5), n=2), t)  # repeat
    assert email.recipients[0].status is RecipientStatus.DELIVERED
    assert event_types(email) == ["EmailRecipientDelivered"]


def test_open_before_delivered_implies_delivery_once() -> None:
    email = dispatching()
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    email.apply_report(report(ReportKind.OPENED, T0 + timedelta(minutes=2)), T0)
    email.apply_report(report(ReportKind.DELIVERED, T0 + timedelta(minutes=1)), T0)
    events = [e for _, e in email.pull_events()]
    assert [type(e) for e in events] == [EmailRecipientDelivered, EmailRecipientOpened]
    assert email.recipients[0].opens == 1


def test_async_bounce_after_delivery_wins_and_deferral_emits() -> None:
    email = dispatching()
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


def test_complaints_and_unsubscribes_count_once_and_unknown_reports_are_only_noted() -> None:
    email = dispatching()
    email.delivery_started("sendgrid", "m", T0)
    email.pull_events()
    for n in (1, 2):
        email.apply_report(report(ReportKind.COMPLAINED, T0, n=n), T0)
        email.apply_report(report(ReportKind.UNSUBSCRIBED, T0, n=n), T0)
    email.apply_report(report(ReportKind.UNKNOWN, T0), T0)
    email.apply_report(report(ReportKind.DELIVERED, T0, recipient="stranger@example.net"), T0)
    assert event_types(email) == ["EmailRecipientComplained", "EmailRecipientUnsubscribed"]
    assert timeline(email)[-2:] == ["report_unknown", "report_ignored"]
    assert email.recipients[0].complained and email.recipients[0].unsubscribed


def test_a_recipient_leaves_a_final_state_only_for_a_later_final_state() -> None:
    r = Recipient(address="ann@example.com", kind="to")
    assert r.deliver(T0) and r.changed
    assert not r.deliver(T0 + timedelta(seconds=1))  # a repeat
    assert not r.defer(T0 + timedelta(seconds=2), "mailbox busy")  # a deferral never undoes it
    assert not r.fail(T0 - timedelta(seconds=1), "older bounce")  # stale
    assert r.fail(T0 + timedelta(seconds=3), "bounced later")
    assert r.status is RecipientStatus.FAILED and r.status_reason == "bounced later"


def test_a_report_names_its_recipient_in_any_case() -> None:
    email = dispatching()
    email.delivery_started("sendgrid", "m", T0)
    email.apply_report(report(ReportKind.DELIVERED, T0, recipient="ANN@Example.COM"), T0)
    [ann] = [r for r in email.recipients if r.address == "ann@example.com"]
    assert ann.status is RecipientStatus.DELIVERED
    email.apply_report(report(ReportKind.DELIVERED, T0, recipient="bob@example.com"), T0)
    assert email.new_timeline[-1].kind == "report_ignored"  # nobody of this email: recorded, not applied


def test_cancel_only_while_queued_and_twice_is_a_no_op() -> None:
    email = queued()
    email.pull_events()
    email.cancel("changed my mind", T0)
    email.cancel("again", T0)
    assert event_types(email) == ["EmailCancelled"]
    assert email.due_at is None
