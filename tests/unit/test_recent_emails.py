"""The accept's emails kept for their dispatch's claim: bounded, the queued ones, each handed out once."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import DispatchEmail
from emailer.domain import Email
from emailer.endpoint.recent import RecentEmails, weight
from handlers.ports import MessageContext
from tests.factories import send_email
from tests.fakes import FakeClock, FakeUnitOfWork, _Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def queued(n: int = 1, **changes: object) -> list[Email]:
    return [Email.queue(send_email(**changes), [], NOW) for _ in range(n)]


def test_each_kept_email_is_handed_out_once() -> None:
    recent = RecentEmails()
    a, b = queued(2)
    recent.keep([a, b])
    assert recent.take([a.id, "unknown"]) == {a.id: a}
    assert recent.take([a.id, b.id]) == {b.id: b}
    assert len(recent) == 0 and recent.bytes == 0


def test_only_queued_emails_are_kept() -> None:
    recent = RecentEmails()
    (cancelled,) = queued()
    cancelled.cancel("changed my mind", NOW)
    recent.keep([cancelled])
    assert recent.take([cancelled.id]) == {}


def test_the_oldest_go_first_beyond_the_count_and_the_bytes() -> None:
    by_count = RecentEmails(max_emails=2)
    first, second, third = queued(3)
    by_count.keep([first, second, third])
    assert set(by_count.take([first.id, second.id, third.id])) == {second.id, third.id}

    (sample,) = queued()
    by_bytes = RecentEmails(max_bytes=100 * weight(sample) + 1)  # each one light enough to keep
    many = queued(150)
    by_bytes.keep(many)
    assert by_bytes.bytes <= by_bytes.max_bytes
    assert 0 < len(by_bytes) < 150
    kept = by_bytes.take(e.id for e in many)
    assert set(kept) == {e.id for e in many[-len(kept) :]}  # the newest


def test_an_email_heavier_than_a_hundredth_of_the_budget_is_read_again_instead() -> None:
    (heavy,) = queued(html="<p>" + "x" * 50_000 + "</p>")
    recent = RecentEmails(max_bytes=1_000_000)
    recent.keep([heavy])
    assert recent.take([heavy.id]) == {}


def test_offer_gives_a_units_claim_the_kept_emails_of_its_messages_packed_or_not() -> None:
    recent = RecentEmails()
    a, b, c = queued(3)
    recent.keep([a, b, c])
    uow = FakeUnitOfWork(FakeClock(), _Store())
    messages = [
        (DispatchEmail(email_id=a.id, more_email_ids=(b.id,)), MessageContext("d-1", "DispatchEmail")),
        (DispatchEmail(email_id="not-kept"), MessageContext("d-2", "DispatchEmail")),
    ]
    assert recent.offer(messages, uow) is uow
    assert uow.offered == {a.id: a, b.id: b}
    assert recent.take([c.id]) == {c.id: c}
