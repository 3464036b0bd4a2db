"""The suppression list: which reports list an address, and what a later email does with a listed one."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from contracts import DeliveryReport, DispatchEmail, RecordDeliveryReports, ReportKind
from emailer.domain import EmailStatus, RecipientStatus, RetryPolicy
from emailer.domain.suppression import Suppression, SuppressionReason
from handlers.dispatch_email import dispatch_email
from handlers.ports import MessageContext
from handlers.record_delivery_reports import record_delivery_reports
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))


def queue(uow: FakeUnitOfWork, clock: FakeClock, *to: str) -> str:
    command = send_email(to=[{"email": a} for a in to], cc=[], attachments=[])
    with uow:
        uow.context = MessageContext(f"in-{command.email_id}", "SendEmail")
        handle_send_email(command, uow, FakeBlobStore(), clock, POLICY)
        uow.commit()
    return command.email_id


def report(email_id: str, recipient: str, kind: ReportKind, event_type: str, n: int = 1) -> DeliveryReport:
    return DeliveryReport(
        provider="sendgrid",
        provider_event_id=f"ev-{email_id}-{n}",
        email_id=email_id,
        recipient=recipient,
        kind=kind,
        occurred_at=FakeClock().now(),
        provider_event_type=event_type,
        reason="550 no such user" if kind is ReportKind.BOUNCED else None,
    )


def record(uow: FakeUnitOfWork, clock: FakeClock, *reports: DeliveryReport) -> None:
    with uow:
        record_delivery_reports(RecordDeliveryReports(reports=list(reports)), uow, clock)
        uow.commit()


def listed(uow: FakeUnitOfWork) -> dict[str, tuple[str, str | None]]:
    return {a: (s.reason.value, s.source_email_id) for a, s in uow.store.suppressions.items()}


def failures(uow: FakeUnitOfWork) -> list[dict[str, object]]:
    return [json.loads(m.body) for m in uow.published("EmailRecipientDeliveryFailed")]


@pytest.mark.parametrize(
    ("kind", "event_type", "reason"),
    [
        (ReportKind.BOUNCED, "bounce", "bounced"),
        (ReportKind.COMPLAINED, "spamreport", "complained"),
        (ReportKind.UNSUBSCRIBED, "unsubscribe", "unsubscribed"),
    ],
)
def test_hard_bounces_complaints_and_unsubscribes_list_the_address(
    uow: FakeUnitOfWork, clock: FakeClock, kind: ReportKind, event_type: str, reason: str
) -> None:
    email_id = queue(uow, clock, "Ana@Example.com")
    record(uow, clock, report(email_id, "Ana@Example.com", kind, event_type))
    assert listed(uow) == {"ana@example.com": (reason, email_id)}


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        (ReportKind.BLOCKED, "bounce"),
        (ReportKind.DROPPED, "dropped"),
        (ReportKind.DEFERRED, "deferred"),
        (ReportKind.UNSUBSCRIBED, "group_unsubscribe"),
        (ReportKind.DELIVERED, "delivered"),
    ],
)
def test_other_reports_list_nothing(
    uow: FakeUnitOfWork, clock: FakeClock, kind: ReportKind, event_type: str
) -> None:
    email_id = queue(uow, clock, "ana@example.com")
    record(uow, clock, report(email_id, "ana@example.com", kind, event_type))
    assert listed(uow) == {}


def test_the_first_reason_stays(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    first = queue(uow, clock, "ana@example.com")
    second = queue(uow, clock, "ana@example.com")
    record(uow, clock, report(first, "ana@example.com", ReportKind.BOUNCED, "bounce"))
    record(uow, clock, report(second, "ana@example.com", ReportKind.COMPLAINED, "spamreport"))
    assert listed(uow) == {"ana@example.com": ("bounced", first)}


def test_a_suppressed_recipient_fails_at_once_and_the_rest_goes_out(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    bounced = queue(uow, clock, "gone@example.com")
    record(uow, clock, report(bounced, "gone@example.com", ReportKind.BOUNCED, "bounce"))
    email_id = queue(uow, clock, "ana@example.com", "GONE@example.com")
    [failed] = [f for f in failures(uow) if f["email_id"] == email_id]
    assert failed["recipient"] == "GONE@example.com"
    assert failed["failure"] == "suppressed"
    assert failed["reason"] == f"suppressed: bounced after email {bounced}"
    provider = RecordingProvider()
    dispatch_email(DispatchEmail(email_id=email_id), uow, FakeBlobStore(), provider, clock, POLICY)
    [sent] = provider.sent
    assert [str(a.email) for a in sent.all_recipients()] == ["ana@example.com"]
    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.ACCEPTED
    assert [r.status for r in email.recipients] == [RecipientStatus.PENDING, RecipientStatus.FAILED]


def test_an_email_whose_every_recipient_is_suppressed_ends_without_a_provider_call(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    with uow:
        uow.suppressions.add(Suppression("ana@example.com", SuppressionReason.MANUAL, clock.now()))
        uow.commit()
    email_id = queue(uow, clock, "ana@example.com")
    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.FAILED
    assert uow.published("DispatchEmail") == []
    [failed] = [json.loads(m.body) for m in uow.published("EmailDeliveryFailed")]
    assert failed["reason"] == "every recipient is on the suppression list"
    assert [f["failure"] for f in failures(uow)] == ["suppressed"]


def test_a_removed_address_is_sent_to_again(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    with uow:
        uow.suppressions.add(Suppression("ana@example.com", SuppressionReason.MANUAL, clock.now()))
        uow.commit()
    with uow:
        assert uow.suppressions.remove("ANA@example.com")
        uow.commit()
    email_id = queue(uow, clock, "ana@example.com")
    assert uow.store.emails[email_id].status is EmailStatus.QUEUED
    assert failures(uow) == []
