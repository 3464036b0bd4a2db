"""The unit-of-work port: one transaction over the emails, the inbox, provider events and the outbox.

Every adapter in ``UNITS_OF_WORK`` runs the whole suite through the port only
(``AbstractUnitOfWork`` and the repositories it exposes): the in-memory fake
the handler tests use, and the SQL one on SQLite and on PostgreSQL. A
behaviour the fake gets wrong would make the handler tests lie; this suite is
what keeps it honest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from contracts import DeliveryReport, ReportKind
from contracts.wire import H
from emailer.adapters.persistence import schema
from emailer.adapters.persistence.engine import make_engine
from emailer.adapters.persistence.tables import metadata
from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
from emailer.domain import Email, EmailStatus, RecipientStatus, RetryPolicy
from emailer.domain.suppression import Suppression, SuppressionReason
from handlers.attachments import reference
from handlers.errors import ConcurrencyConflict
from handlers.ports import MessageContext
from handlers.unit_of_work import AbstractUnitOfWork, event_message_id
from tests.factories import send_email
from tests.fakes import FakeClock, FakeUnitOfWork, _Store

NewUow = Callable[[], AbstractUnitOfWork]
Adapter = Callable[[pytest.FixtureRequest, FakeClock], AbstractContextManager[NewUow]]
POLICY = RetryPolicy(jitter=0.0)


@contextmanager
def in_memory_fake(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[NewUow]:
    store = _Store()
    yield lambda: FakeUnitOfWork(clock, store)


@contextmanager
def sql_on_sqlite(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[NewUow]:
    engine = make_engine(f"sqlite:///{request.getfixturevalue('tmp_path') / 'uow.db'}")
    schema.upgrade(engine)
    try:
        yield lambda: SqlUnitOfWork(engine, clock)
    finally:
        engine.dispose()


@contextmanager
def sql_on_postgres(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[NewUow]:
    engine: Engine = make_engine(request.getfixturevalue("postgres_url"))
    schema.upgrade(engine)
    with engine.begin() as conn:  # a clean slate: this test's rows only
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} CASCADE"))
    try:
        yield lambda: SqlUnitOfWork(engine, clock)
    finally:
        engine.dispose()


# One line per adapter; a server-backed one carries its marker.
UNITS_OF_WORK = [
    pytest.param(in_memory_fake, id="in-memory-fake"),
    pytest.param(sql_on_sqlite, id="sqlite"),
    pytest.param(sql_on_postgres, id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=UNITS_OF_WORK)
def new_uow(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[NewUow]:
    adapter: Adapter = request.param
    with adapter(request, clock) as factory:
        yield factory


def queue(clock: FakeClock, **changes: Any) -> Email:
    command = send_email(**changes)
    attachments = [reference(a) for a in command.attachments]
    return Email.queue(command, attachments, clock.now())


def test_the_commands_conversation_is_kept_with_the_email_and_carried_by_later_messages(
    new_uow: NewUow, clock: FakeClock
) -> None:
    email = Email.queue(send_email(), [], clock.now(), "corr-7", "conv-7")
    store(new_uow, email)
    uow = new_uow()
    with uow:  # later work started by someone else (the scheduler): its own fresh ids
        uow.context = MessageContext("m-scheduler", "Scheduler")
        again = uow.emails.get(email.id)
        assert again is not None and (again.correlation_id, again.conversation_id) == ("corr-7", "conv-7")
        again.cancel("changed my mind", clock.now())
        written = uow.commit()
    assert [m.message_type for m in written] == ["EmailCancelled"]
    headers = written[0].headers
    assert (headers[H.CORRELATION_ID], headers[H.CONVERSATION_ID]) == ("corr-7", "conv-7")
    assert headers[H.RELATED_TO] == "m-scheduler"


def store(new_uow: NewUow, email: Email, message_id: str = "m-1") -> list[Any]:
    uow = new_uow()
    with uow:
        uow.context = MessageContext(message_id, "SendEmail", {H.CORRELATION_ID: "corr-1"})
        uow.emails.add(email)
        uow.inbox.record(message_id, "SendEmail")
        return uow.commit()


def test_what_was_committed_comes_back_whole(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock, send_at=(clock.now() + timedelta(hours=2)).isoformat(), metadata={"order": "7"})
    store(new_uow, email)
    with new_uow() as uow:
        loaded = uow.emails.get(email.id)
    assert loaded is not None
    for attr in ("id", "status", "content", "metadata", "attachments", "created_at", "send_at", "due_at"):
        assert getattr(loaded, attr) == getattr(email, attr), attr
    assert [(r.address, r.kind, r.name) for r in loaded.recipients] == [
        (r.address, r.kind, r.name) for r in email.recipients
    ]


def test_nothing_is_visible_without_a_commit(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock)
    uow = new_uow()
    with uow:
        uow.emails.add(email)
        uow.inbox.record("m-9", "SendEmail")
        uow.provider_events.record("sendgrid", "ev-9", email.id)
    with new_uow() as again:
        assert again.emails.get(email.id) is None
        assert not again.inbox.seen("m-9")
        assert not again.provider_events.seen("sendgrid", "ev-9")


def test_an_exception_inside_the_transaction_rolls_it_back(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock)
    with pytest.raises(RuntimeError), new_uow() as uow:
        uow.emails.add(email)
        raise RuntimeError("handler failed")
    with new_uow() as again:
        assert again.emails.get(email.id) is None


def test_the_commit_writes_the_events_with_stable_ids_and_the_emails_conversation(
    new_uow: NewUow, clock: FakeClock
) -> None:
    command = send_email()
    email = Email.queue(command, [], clock.now(), "corr-1", "conv-1")
    email.wake(clock.now(), POLICY)
    written = store(new_uow, email, message_id="m-incoming")
    queued = [m for m in written if m.message_type == "EmailQueued"]
    assert len(queued) == 1 and queued[0].intent == "Publish"
    assert queued[0].message_id == event_message_id(email.id, 1)  # the same however often it is published
    assert queued[0].headers[H.CORRELATION_ID] == "corr-1"
    assert queued[0].headers[H.CONVERSATION_ID] == "conv-1"
    assert queued[0].headers[H.RELATED_TO] == "m-incoming"
    dispatch = [m for m in written if m.message_type == "DispatchEmail"]
    assert len(dispatch) == 1 and dispatch[0].intent == "Send"


def test_handled_ids_and_provider_events_are_remembered(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock)
    store(new_uow, email, message_id="m-1")
    uow = new_uow()
    with uow:
        uow.provider_events.record("sendgrid", "ev-1", email.id)
        uow.commit()
    with new_uow() as again:
        again.inbox.preload(["m-1", "m-2"])
        assert again.inbox.seen("m-1") and not again.inbox.seen("m-2")
        assert again.provider_events.seen("sendgrid", "ev-1")
        assert not again.provider_events.seen("sendgrid", "ev-2")


def test_a_claimed_batch_of_provider_events_answers_and_records_as_one_by_one(
    new_uow: NewUow, clock: FakeClock
) -> None:
    """Claim, then seen/record as the handler does: each id once, whatever was recorded before."""
    email = queue(clock)
    store(new_uow, email)
    with new_uow() as uow:
        uow.provider_events.record("sendgrid", "ev-old", email.id)
        uow.commit()
    batch = [("sendgrid", e, email.id) for e in ("ev-old", "ev-1", "ev-2", "ev-1")]  # ev-1 twice
    with new_uow() as uow:
        uow.provider_events.claim(batch)
        uow.provider_events.claim(batch)  # a second hint changes nothing
        applied = []
        for provider, event_id, email_id in batch:
            if not uow.provider_events.seen(provider, event_id):
                uow.provider_events.record(provider, event_id, email_id)
                applied.append(event_id)
        assert applied == ["ev-1", "ev-2"]
        uow.commit()
    with new_uow() as again:
        assert all(again.provider_events.seen("sendgrid", e) for e in ("ev-old", "ev-1", "ev-2"))


def test_a_claim_rolled_back_records_nothing(new_uow: NewUow, clock: FakeClock) -> None:
    with new_uow() as uow:
        uow.provider_events.claim([("sendgrid", "ev-1", "e-1")])
        assert not uow.provider_events.seen("sendgrid", "ev-1")
    with new_uow() as again:
        assert not again.provider_events.seen("sendgrid", "ev-1")


def state(recipient: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(recipient).items() if k != "changed"}


def test_what_reports_change_in_recipients_comes_back_whole(new_uow: NewUow, clock: FakeClock) -> None:
    to = [{"email": a} for a in ("ann@example.com", "bob@example.com", "cy@example.com")]
    email = Email.queue(send_email(to=to, cc=[], bcc=[]), [], clock.now())
    email.start_attempt(clock.now(), POLICY)
    email.delivery_started("sendgrid", "sg-1", clock.now())
    store(new_uow, email)

    def report(kind: ReportKind, to: str, reason: str | None = None) -> DeliveryReport:
        clock.advance(1)
        return DeliveryReport(
            provider="sendgrid", provider_event_id=f"{to}/{kind}", email_id=email.id, recipient=to,
            kind=kind, occurred_at=clock.now(), reason=reason,
        )  # fmt: skip

    with new_uow() as uow:
        loaded = uow.emails.get(email.id)
        assert loaded is not None
        for r in (
            report(ReportKind.DELIVERED, "ann@example.com", "250 OK"),
            report(ReportKind.OPENED, "ann@example.com"),
            report(ReportKind.CLICKED, "ann@example.com"),
            report(ReportKind.COMPLAINED, "ann@example.com"),
            report(ReportKind.UNSUBSCRIBED, "ann@example.com"),
            report(ReportKind.BOUNCED, "bob@example.com", "550 no such user"),
            report(ReportKind.OPENED, "cy@example.com"),  # delivery implied, no reason of its own
        ):
            loaded.apply_report(r, clock.now())
        expected = [state(r) for r in loaded.recipients]
        uow.commit()
    with new_uow() as again:
        stored = again.emails.get(email.id)
        assert stored is not None
        assert [state(r) for r in stored.recipients] == expected
        assert [r.status for r in stored.recipients] == [RecipientStatus.DELIVERED, RecipientStatus.FAILED,
                                                         RecipientStatus.DELIVERED]  # fmt: skip


def test_preloading_answers_like_getting_one_by_one(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock)
    store(new_uow, email)
    with new_uow() as uow:
        uow.emails.preload([email.id, "not-there"])
        found = uow.emails.get(email.id)
        assert found is not None and found.id == email.id
        assert uow.emails.get("not-there") is None


def test_lookups_made_together_answer_as_made_one_by_one(new_uow: NewUow, clock: FakeClock) -> None:
    """A batch's inbox, email id and suppression lookups, made together (on PostgreSQL one round trip at
    the block's end, ``bulk.deferred_lookups``): what they found is what each finds alone, a stored
    email whole with its recipients, a listed address with its entry."""
    email = queue(clock, to=[{"email": "ana@example.com"}, {"email": "Bob@Example.com"}])
    store(new_uow, email, message_id="m-seen")
    with new_uow() as uow:
        uow.suppressions.add(Suppression("ana@example.com", SuppressionReason.BOUNCED, clock.now(), "e-1"))
        uow.commit()
    with new_uow() as uow:
        with uow.lookups_together():
            uow.inbox.preload(["m-seen", "m-new", "m-\u00e9\u200d\U0001f4e7"])
            uow.emails.preload([email.id, "not-there"])
            uow.suppressions.preload(["ANA@example.com", "bob@example.com"])
        assert uow.inbox.seen("m-seen") and not uow.inbox.seen("m-new")
        assert not uow.inbox.seen("m-\u00e9\u200d\U0001f4e7")
        found = uow.emails.get(email.id)
        assert found is not None and [r.address for r in found.recipients] == [
            r.address for r in email.recipients
        ]
        assert uow.emails.get("not-there") is None
        listed = uow.suppressions.find(["ana@example.com", "bob@example.com"])
        assert [(s.address, s.reason, s.source_email_id) for s in listed] == [
            ("ana@example.com", SuppressionReason.BOUNCED, "e-1")
        ]
        with uow.lookups_together():  # nothing to look up: no statement at all
            uow.inbox.preload(["m-seen"])
            uow.emails.preload([email.id])
        assert uow.inbox.seen("m-seen")


# SQLite serialises writers (BEGIN IMMEDIATE): two of its transactions never overlap, so only the
# adapters whose transactions can overlap take part in the conflict test.
OVERLAPPING_WRITERS = [p for p in UNITS_OF_WORK if p.id != "sqlite"]


@pytest.mark.parametrize("new_uow", OVERLAPPING_WRITERS, indirect=True)
def test_a_change_made_meanwhile_is_a_conflict_and_saves_nothing(new_uow: NewUow, clock: FakeClock) -> None:
    email = queue(clock)
    store(new_uow, email)
    first, second = new_uow(), new_uow()
    with first, second:
        a, b = first.emails.get(email.id), second.emails.get(email.id)
        assert a is not None and b is not None
        a.cancel("first", clock.now())
        first.commit()
        b.cancel("second", clock.now())
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with new_uow() as uow:
        stored = uow.emails.get(email.id)
        assert stored is not None and stored.status is EmailStatus.CANCELLED


@pytest.mark.parametrize("new_uow", OVERLAPPING_WRITERS, indirect=True)
def test_one_email_changed_meanwhile_fails_the_whole_batch_of_changed_emails(
    new_uow: NewUow, clock: FakeClock
) -> None:
    """Changed emails are saved together (one statement): one conflict saves none of them."""
    kept, taken = queue(clock), queue(clock)
    store(new_uow, kept, "m-1")
    store(new_uow, taken, "m-2")
    first, second = new_uow(), new_uow()
    with first, second:
        a = first.emails.get(taken.id)
        b_kept, b_taken = second.emails.get(kept.id), second.emails.get(taken.id)
        assert a is not None and b_kept is not None and b_taken is not None
        a.cancel("first", clock.now())
        first.commit()
        b_kept.cancel("second", clock.now())
        b_taken.cancel("second", clock.now())
        with pytest.raises(ConcurrencyConflict):
            second.commit()
    with new_uow() as uow:
        stored_kept, stored_taken = uow.emails.get(kept.id), uow.emails.get(taken.id)
        assert stored_kept is not None and stored_kept.status is EmailStatus.QUEUED
        assert stored_taken is not None and stored_taken.version == 2


@pytest.mark.parametrize("new_uow", OVERLAPPING_WRITERS, indirect=True)
def test_a_claim_leaves_out_what_another_transaction_holds(new_uow: NewUow, clock: FakeClock) -> None:
    """Offered (as the accept committed it) or not."""
    held, free = queue(clock), queue(clock)
    store(new_uow, held, "m-1")
    store(new_uow, free, "m-2")
    first, second = new_uow(), new_uow()
    with first, second:
        assert [e.id for e in first.emails.claim([held.id])] == [held.id]
        assert [e.id for e in second.emails.claim([held.id, free.id])] == [free.id]  # no wait, no conflict
        assert second.emails.claim([held.id], {held.id: held}) == []  # no wait, no conflict
        first.commit()
    with new_uow() as uow:  # released with the transaction
        assert sorted(e.id for e in uow.emails.claim([held.id, free.id])) == sorted([held.id, free.id])


def test_a_claim_takes_an_offered_email_as_it_is_while_its_row_is_unchanged(
    new_uow: NewUow, clock: FakeClock
) -> None:
    """Offered (as the accept committed them): one unchanged is taken without being read again; one
    changed meanwhile is read again (its new state); one no longer queued is left out."""
    unchanged, woken, cancelled = queue(clock), queue(clock), queue(clock)
    for n, email in enumerate((unchanged, woken, cancelled)):
        store(new_uow, email, f"m-{n}")
    with new_uow() as uow:  # meanwhile: one is woken (still queued), one cancelled
        w, c = uow.emails.get(woken.id), uow.emails.get(cancelled.id)
        assert w is not None and c is not None
        assert w.wake(clock.now(), POLICY)
        c.cancel("changed my mind", clock.now())
        uow.collect()
        uow.commit()
    offered = {e.id: e for e in (unchanged, woken, cancelled)}
    with new_uow() as uow:
        claimed = {e.id: e for e in uow.emails.claim(offered, offered)}
        assert sorted(claimed) == sorted([unchanged.id, woken.id])
        assert claimed[unchanged.id] is unchanged
        assert claimed[woken.id] is not woken
        assert claimed[woken.id].version == woken.version + 1 and claimed[woken.id].due_at is not None
        claimed[unchanged.id].start_attempt(clock.now(), POLICY)  # saved with the version check
        uow.collect()
        uow.commit()
    with new_uow() as uow:
        stored = uow.emails.get(unchanged.id)
        assert stored is not None and stored.status is EmailStatus.DISPATCHING and stored.version == 2


def test_a_claim_takes_only_queued_emails(new_uow: NewUow, clock: FakeClock) -> None:
    """An email that cannot be attempted any more (here cancelled) is left out, and not held."""
    queued, cancelled = queue(clock), queue(clock)
    cancelled.cancel("changed my mind", clock.now())
    store(new_uow, queued, "m-1")
    store(new_uow, cancelled, "m-2")
    with new_uow() as uow:
        assert [e.id for e in uow.emails.claim([queued.id, cancelled.id])] == [queued.id]
        stored = uow.emails.get(cancelled.id)  # still readable in the same transaction
        assert stored is not None and stored.status is EmailStatus.CANCELLED


@pytest.mark.parametrize("new_uow", OVERLAPPING_WRITERS, indirect=True)
def test_a_change_made_meanwhile_to_one_of_several_emails_is_a_conflict_and_saves_none(
    new_uow: NewUow, clock: FakeClock
) -> None:
    emails = [queue(clock) for _ in range(3)]
    for n, email in enumerate(emails):
        store(new_uow, email, f"m-{n}")
    first, second = new_uow(), new_uow()
    with first, second:
        first.emails.preload(e.id for e in emails)
        for email in emails:
            loaded = first.emails.get(email.id)
            assert loaded is not None
            loaded.cancel("first", clock.now())
        other = second.emails.get(emails[1].id)
        assert other is not None
        other.cancel("second", clock.now())
        second.commit()
        with pytest.raises(ConcurrencyConflict):
            first.commit()
    with new_uow() as uow:
        uow.emails.preload(e.id for e in emails)
        statuses = [uow.emails.get(e.id) for e in emails]
        assert [s.status if s else None for s in statuses] == [
            EmailStatus.QUEUED, EmailStatus.CANCELLED, EmailStatus.QUEUED
        ]  # fmt: skip


def test_due_finds_only_what_is_due(new_uow: NewUow, clock: FakeClock) -> None:
    now_email = queue(clock)
    later = queue(clock, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    store(new_uow, now_email, "m-1")
    store(new_uow, later, "m-2")
    with new_uow() as uow:
        assert [e.id for e in uow.emails.due(clock.now(), 10)] == [now_email.id]
    clock.advance(3601)
    with new_uow() as uow:
        assert sorted(e.id for e in uow.emails.due(clock.now(), 10)) == sorted([now_email.id, later.id])


def test_unsettled_finds_attempts_under_way_since_a_time_oldest_first(
    new_uow: NewUow, clock: FakeClock
) -> None:
    first, second, idle = queue(clock), queue(clock), queue(clock)
    for n, email in enumerate((first, second, idle)):
        store(new_uow, email, f"m-{n}")
    for email in (first, second):
        with new_uow() as uow:
            loaded = uow.emails.get(email.id)
            assert loaded is not None
            loaded.start_attempt(clock.now(), POLICY)
            uow.commit()
        clock.advance(10)
    with new_uow() as uow:
        assert uow.emails.unsettled(clock.now(), 10) == [first.id, second.id]
        assert uow.emails.unsettled(clock.now() - timedelta(seconds=11), 10) == [first.id]
        assert uow.emails.unsettled(clock.now(), 1) == [first.id]
        loaded = uow.emails.get(first.id)
        assert loaded is not None and loaded.attempt_started_at == clock.now() - timedelta(seconds=20)


def test_the_suppression_list_keeps_the_first_reason_and_ignores_case(
    new_uow: NewUow, clock: FakeClock
) -> None:
    bounced = Suppression(
        "ana@example.com", SuppressionReason.BOUNCED, clock.now(), "e-1", "550 no such user"
    )
    with new_uow() as uow:
        assert uow.suppressions.add(bounced)
        assert not uow.suppressions.add(
            Suppression("ANA@example.com", SuppressionReason.COMPLAINED, clock.now())
        )
        assert uow.suppressions.add(Suppression("bob@example.com", SuppressionReason.MANUAL, clock.now()))
        uow.commit()
    with new_uow() as uow:
        assert uow.suppressions.find(["Ana@Example.com", "carl@example.com"]) == [bounced]
        assert [s.address for s in uow.suppressions.page(1)] == ["ana@example.com"]
        assert [s.address for s in uow.suppressions.page(10, after="ana@example.com")] == ["bob@example.com"]
        assert uow.suppressions.remove("BOB@example.com")
        assert not uow.suppressions.remove("bob@example.com")
    with new_uow() as uow:  # not committed: still listed
        assert [s.address for s in uow.suppressions.page(10)] == ["ana@example.com", "bob@example.com"]


def test_preloaded_suppressions_answer_as_the_transaction_sees_them(
    new_uow: NewUow, clock: FakeClock
) -> None:
    """A batch looks its addresses up once; what it adds or removes afterwards is seen all the same."""
    with new_uow() as uow:
        uow.suppressions.add(Suppression("ana@example.com", SuppressionReason.MANUAL, clock.now()))
        uow.commit()
    with new_uow() as uow:
        uow.suppressions.preload(["ANA@example.com", "bob@example.com", "carl@example.com"])
        assert [s.address for s in uow.suppressions.find(["Ana@example.com", "Bob@example.com"])] == [
            "ana@example.com"
        ]
        bounced = Suppression("bob@example.com", SuppressionReason.BOUNCED, clock.now(), "e-1")
        assert uow.suppressions.add(bounced)
        assert uow.suppressions.remove("ana@example.com")
        assert [s.address for s in uow.suppressions.find(["ana@example.com", "bob@example.com"])] == [
            "bob@example.com"
        ]
        assert uow.suppressions.find(["carl@example.com"]) == []
