"""The SQL adapters (repository, unit of work, migrations) on SQLite and PostgreSQL alike.

The outbox and the inbox have their own module: ``test_outbox.py``.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, Table, func, select

from contracts.wire import H
from emailer.adapters.persistence import schema
from emailer.adapters.persistence.bulk import COPY_FROM_ROWS
from emailer.adapters.persistence.queries import email_view
from emailer.adapters.persistence.tables import emails, inbox, metadata, outbox
from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
from emailer.domain import Email, RetryPolicy
from handlers.attachments import reference
from handlers.errors import ConcurrencyConflict
from handlers.ports import MessageContext
from tests.factories import send_email
from tests.fakes import FakeClock

POLICY = RetryPolicy(jitter=0.0)


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def add_email(engine: Engine, clock: FakeClock, message_id: str = "m-1", **changes: Any) -> Email:
    command = send_email(**changes)
    refs = [reference(a) for a in command.attachments]
    email = Email.queue(command, refs, clock.now())
    uow = SqlUnitOfWork(engine, clock)
    with uow:
        uow.context = MessageContext(message_id, "SendEmail")
        uow.emails.add(email)
        uow.inbox.record(message_id, "SendEmail")
        uow.commit()
    return email


def test_round_trip_keeps_every_field(engine: Engine) -> None:
    clock = FakeClock()
    email = add_email(engine, clock, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    uow = SqlUnitOfWork(engine, clock)
    with uow:
        loaded = uow.emails.get(email.id)
    assert loaded is not None
    for attr in ("id", "status", "content", "metadata", "attachments", "created_at", "send_at", "due_at"):
        assert getattr(loaded, attr) == getattr(email, attr), attr
    assert [(r.address, r.kind, r.name) for r in loaded.recipients] == [
        (r.address, r.kind, r.name) for r in email.recipients
    ]
    assert loaded.version == 1 and loaded.event_seq == 1


def test_the_content_hash_is_stored_and_an_email_without_one_compares_by_its_stored_content(
    engine: Engine,
) -> None:
    """Rows from before migration 0003_f have NULL: their stored values hash as the command did."""
    clock = FakeClock()
    email = add_email(engine, clock, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    assert email.content_hash is not None
    with engine.begin() as conn:
        assert conn.execute(select(emails.c.content_hash)).scalar_one() == email.content_hash
        conn.execute(emails.update().values(content_hash=None))
    with SqlUnitOfWork(engine, clock) as uow:
        loaded = uow.emails.get(email.id)
    assert loaded is not None and loaded.content_hash is None
    assert loaded.computed_content_hash() == email.content_hash


def test_state_inbox_and_outbox_commit_together_or_not_at_all(engine: Engine) -> None:
    clock = FakeClock()
    add_email(engine, clock)
    assert (count(engine, emails), count(engine, inbox), count(engine, outbox)) == (1, 1, 1)
    uow = SqlUnitOfWork(engine, clock)
    with uow:  # no commit: rolled back
        uow.emails.add(Email.queue(send_email(attachments=[]), [], clock.now()))
        uow.inbox.record("m-2", "SendEmail")
    assert (count(engine, emails), count(engine, inbox), count(engine, outbox)) == (1, 1, 1)
    with SqlUnitOfWork(engine, clock) as uow2:
        assert uow2.inbox.seen("m-1") and not uow2.inbox.seen("m-2")


def test_an_email_stored_before_correlation_ids_were_recorded_correlates_by_its_own_id(
    engine: Engine,
) -> None:
    clock = FakeClock()
    email = add_email(engine, clock)
    with engine.begin() as conn:  # as a row written before migration 0004_k looks
        conn.execute(emails.update().values(correlation_id=None, conversation_id=None))
    uow = SqlUnitOfWork(engine, clock)
    with uow:  # later work started by someone else: its ids must not become the email's
        uow.context = MessageContext("m-scheduler", "Scheduler")
        loaded = uow.emails.get(email.id)
        assert loaded is not None and loaded.correlation_id == email.id
        loaded.cancel("changed my mind", clock.now())
        written = uow.commit()
    assert [m.message_type for m in written] == ["EmailCancelled"]
    headers = written[0].headers
    assert (headers[H.CORRELATION_ID], headers[H.CONVERSATION_ID]) == (email.id, email.id)
    assert headers[H.RELATED_TO] == "m-scheduler"


def test_preloading_a_batch_answers_like_one_by_one(engine: Engine) -> None:
    clock = FakeClock()
    stored = add_email(engine, clock)
    with SqlUnitOfWork(engine, clock) as uow:
        uow.emails.preload([stored.id, "missing-1"])
        uow.inbox.preload(["m-1", "m-unknown"])
        found = uow.emails.get(stored.id)
        assert found is not None and found.recipients == stored.recipients
        assert uow.emails.get("missing-1") is None
        assert uow.inbox.seen("m-1") and not uow.inbox.seen("m-unknown")
        fresh = Email.queue(send_email(email_id="missing-1", attachments=[]), [], clock.now())
        uow.emails.add(fresh)  # known absent, then added: get returns it
        assert uow.emails.get("missing-1") is fresh


def test_a_stale_update_is_a_conflict(engine: Engine) -> None:
    clock = FakeClock()
    email = add_email(engine, clock)
    first, second = SqlUnitOfWork(engine, clock), SqlUnitOfWork(engine, clock)
    with first:
        a = first.emails.get(email.id)
        assert a is not None
        a.start_attempt(clock.now(), POLICY)
        first.commit()
    with second, pytest.raises(ConcurrencyConflict):
        b = second.emails.get(email.id)
        assert b is not None
        b.version = 1  # as if loaded before the first commit
        second.emails._loaded_version[email.id] = 1
        b.give_up_waiting(clock.now())
        second.commit()


def test_due_emails_and_the_read_side(engine: Engine) -> None:
    clock = FakeClock()
    now_email = add_email(engine, clock)
    later = add_email(engine, clock, "m-2", send_at=(clock.now() + timedelta(hours=1)).isoformat())
    with SqlUnitOfWork(engine, clock) as uow:
        assert [e.id for e in uow.emails.due(clock.now(), 10)] == [now_email.id]
    view = email_view(engine, later.id)
    assert view is not None and view["status"] == "queued"
    assert view["timeline"][0]["kind"] == "queued" and view["attachments"][0]["filename"] == "invoice.pdf"
    assert email_view(engine, "nope") is None


@pytest.mark.parametrize("rows", [25, COPY_FROM_ROWS + 5], ids=["json", "copy"])
def test_many_timeline_steps_of_one_transaction_read_back_in_order(engine: Engine, rows: int) -> None:
    """Many steps, as JSON and by COPY on PostgreSQL (``bulk.py``): read back as an executemany writes."""
    clock = FakeClock()
    email = add_email(engine, clock, to=[{"email": "ann@example.com"}], cc=[], bcc=[])
    with SqlUnitOfWork(engine, clock) as uow:
        loaded = uow.emails.get(email.id)
        assert loaded is not None
        for n in range(rows):
            clock.advance(1)
            loaded._record(clock.now(), "note", {"n": n, "text": 'a "quote"\ttab\\ \u00e9'})
        uow.commit()
    view = email_view(engine, email.id)
    assert view is not None
    notes = [step for step in view["timeline"] if step["kind"] == "note"]
    assert [s["n"] for s in notes] == list(range(rows))
    assert {s["text"] for s in notes} == {'a "quote"\ttab\\ \u00e9'}
    assert notes[-1]["at"] == clock.now().isoformat()


@pytest.mark.postgres
def test_competing_schedulers_take_different_rows(pg_engine: Engine) -> None:
    """SKIP LOCKED is PostgreSQL's; on SQLite writers are serialised (BEGIN IMMEDIATE) instead."""
    engine = pg_engine
    clock = FakeClock()
    for i in range(4):
        add_email(engine, clock, f"m-{i}")
    holding, release = threading.Event(), threading.Event()
    taken: list[str] = []

    def first() -> None:
        with SqlUnitOfWork(engine, clock) as uow:
            taken.extend(e.id for e in uow.emails.due(clock.now(), 2))
            holding.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    assert holding.wait(10)
    with SqlUnitOfWork(engine, clock) as uow:
        others = [e.id for e in uow.emails.due(clock.now(), 10)]
    release.set()
    t.join()
    assert len(taken) == 2 and len(others) == 2 and not set(taken) & set(others)


def test_models_match_the_migration(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_downgrade_upgrade(engine: Engine) -> None:
    head = schema.head_revision()
    schema.downgrade(engine, "base")
    assert schema.current_revision(engine) is None
    with pytest.raises(schema.SchemaNotAtHead, match="emailer db upgrade"):
        schema.check_at_head(engine)
    schema.upgrade(engine)
    assert schema.current_revision(engine) == head
    schema.check_at_head(engine)
    add_email(engine, FakeClock())
    assert count(engine, emails) == 1
