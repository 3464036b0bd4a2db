"""Applying provider reports: any order and any repeat give the same final state and one set of events."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import DeliveryReport, EmailDeliveryCompleted, RecordDeliveryReports, ReportKind
from emailer.domain import Email, RecipientStatus, RetryPolicy, SendOutcome
from handlers.record_delivery_reports import record_delivery_reports
from tests.factories import send_email
from tests.fakes import FakeClock, FakeUnitOfWork

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(jitter=0.0)
ADDRESSES = ["ana@example.com", "bob@example.com", "cy@example.com"]


def accepted_email() -> Email:
    command = send_email(email_id="order-42", attachments=[], cc=[], to=[{"email": a} for a in ADDRESSES])
    email = Email.queue(command, [], T0)
    email.start_attempt(T0, POLICY)
    email.record_outcome(SendOutcome.accepted("sg-1"), "sendgrid", T0, POLICY)
    email.pull_events()
    return email


def report(kind: ReportKind, recipient: str, second: int, event_id: str | None = None) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid",
        provider_event_id=event_id or f"{recipient}/{kind}/{second}",
        email_id="order-42",
        recipient=recipient,
        kind=kind,
        occurred_at=T0 + timedelta(seconds=second),
        reason=f"{kind} at {second}",
    )


STORY = [
    report(ReportKind.PROCESSED, "ana@example.com", 1),
    report(ReportKind.DEFERRED, "ana@example.com", 2),
    report(ReportKind.DELIVERED, "ana@example.com", 3),
    report(ReportKind.OPENED, "ana@example.com", 4),
    report(ReportKind.CLICKED, "ana@example.com", 5),
    report(ReportKind.PROCESSED, "bob@example.com", 1),
    report(ReportKind.BOUNCED, "bob@example.com", 2),
    report(ReportKind.OPENED, "bob@example.com", 6),  # engagement after failure: recorded, no revival
    report(ReportKind.DELIVERED, "cy@example.com", 2),
    report(ReportKind.COMPLAINED, "cy@example.com", 8),
    report(ReportKind.DEFERRED, "cy@example.com", 9),  # late deferral: changes nothing
]


def final_state(email: Email) -> list[tuple[Any, ...]]:
    return [
        (
            r.address,
            r.status,
            r.status_at,
            r.status_reason,
            r.opens,
            r.clicks,
            r.complained,
            r.delivery_implied,
        )
        for r in email.recipients
    ]


def apply_all(reports: list[DeliveryReport]) -> tuple[Email, list[str]]:
    email = accepted_email()
    for r in reports:
        email.apply_report(r, T0 + timedelta(minutes=1))
    events = [type(e).__name__ for _, e in email.pull_events()]
    return email, events


def test_the_story_in_order() -> None:
    email, events = apply_all(STORY)
    assert [r.status for r in email.recipients] == [
        RecipientStatus.DELIVERED, RecipientStatus.FAILED, RecipientStatus.DELIVERED,
    ]  # fmt: skip
    assert events.count("EmailDeliveryCompleted") == 1 and events[-1] != "EmailRecipientDeferred"
    assert email.recipients[1].opens == 1  # recorded, yet still failed
    assert email.completed_at is not None


@settings(max_examples=200, deadline=None)
@given(st.permutations(STORY), st.lists(st.sampled_from(STORY), max_size=6))
def test_any_order_and_any_repeat_give_the_same_final_state(
    shuffled: list[DeliveryReport], repeats: list[DeliveryReport]
) -> None:
    """Through the handler (which dedupes by provider event id), as the worker applies them."""
    expected, expected_events = apply_all(STORY)
    uow = FakeUnitOfWork(FakeClock(T0 + timedelta(minutes=1)))
    with uow:
        uow.emails.add(accepted_email())
        uow.commit()
    published: list[tuple[str, str]] = []
    batches = [shuffled[:4], shuffled[4:] + repeats, repeats]
    for batch in (b for b in batches if b):
        with uow:
            record_delivery_reports(RecordDeliveryReports(reports=batch), uow, uow.clock)
            published += [(m.message_type, json.loads(m.body).get("recipient", "")) for m in uow.commit()]
    email = uow.emails.get("order-42")
    assert email is not None
    assert final_state(email) == final_state(expected)
    assert len(published) == len(set(published)), "no public event twice for the same recipient"
    kinds = [kind for kind, _ in published]
    assert kinds.count("EmailDeliveryCompleted") == 1
    for kind in ("EmailRecipientDeliveryFailed", "EmailRecipientComplained", "EmailRecipientClicked"):
        assert kinds.count(kind) == expected_events.count(kind) == 1
    # An open that arrives before the bounce implies delivery (published): the bounce then outranks it.
    assert {r for kind, r in published if kind == "EmailRecipientDelivered"} >= {ADDRESSES[0], ADDRESSES[2]}


def test_a_failure_outranks_a_delivery_that_an_open_only_implied() -> None:
    opened_first, _ = apply_all([report(ReportKind.OPENED, "ana@example.com", 9),
                                 report(ReportKind.BOUNCED, "ana@example.com", 2)])  # fmt: skip
    bounced_first, _ = apply_all([report(ReportKind.BOUNCED, "ana@example.com", 2),
                                  report(ReportKind.OPENED, "ana@example.com", 9)])  # fmt: skip
    assert final_state(opened_first) == final_state(bounced_first)
    assert opened_first.recipients[0].status is RecipientStatus.FAILED


def test_delivered_and_bounced_in_the_same_second_settle_the_same_either_way() -> None:
    a = report(ReportKind.DELIVERED, "ana@example.com", 3)
    b = report(ReportKind.BOUNCED, "ana@example.com", 3)
    states = {str(final_state(apply_all(list(p))[0])) for p in itertools.permutations([a, b])}
    assert len(states) == 1


def test_completion_says_how_each_recipient_ended_once() -> None:
    email = accepted_email()
    for r in [
        report(ReportKind.DELIVERED, "ana@example.com", 1),
        report(ReportKind.DROPPED, "bob@example.com", 1),
    ]:
        email.apply_report(r, T0)
    assert not [e for _, e in email.pull_events() if isinstance(e, EmailDeliveryCompleted)]
    email.apply_report(report(ReportKind.DELIVERED, "cy@example.com", 2), T0)
    [completed] = [e for _, e in email.pull_events() if isinstance(e, EmailDeliveryCompleted)]
    assert [(o.recipient, o.outcome) for o in completed.outcomes] == [
        ("ana@example.com", "delivered"), ("bob@example.com", "failed"), ("cy@example.com", "delivered"),
    ]  # fmt: skip
    email.apply_report(report(ReportKind.BOUNCED, "ana@example.com", 30), T0)  # a late asynchronous bounce
    assert [type(e).__name__ for _, e in email.pull_events()] == ["EmailRecipientDeliveryFailed"]


def test_a_resubscribe_is_on_the_timeline_only() -> None:
    email = accepted_email()
    email.apply_report(report(ReportKind.RESUBSCRIBED, "ana@example.com", 1), T0)
    assert email.pull_events() == []
    assert email.new_timeline[-1].kind == "recipient_resubscribed"
