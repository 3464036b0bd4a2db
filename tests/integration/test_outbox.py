"""The outbox (relay, claim-then-publish sweep, purge) and the inbox, on SQLite and PostgreSQL alike.

Waits are bounded on real conditions (events a publisher sets), never a sleep.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, NullPool, create_engine, event, func, select, update
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from contracts.wire import H
from emailer.adapters.persistence import outbox as outbox_rows
from emailer.adapters.persistence.bulk import COPY_FROM_ROWS
from emailer.adapters.persistence.inbox import purge_inbox, purge_provider_events
from emailer.adapters.persistence.outbox import Outbox
from emailer.adapters.persistence.tables import inbox, outbox
from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
from handlers.ports import OutgoingMessage
from tests.fakes import FakeClock, RecordingPublisher

WAIT = 10.0  # seconds: the longest any condition below may take


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=f"msg-{n}",
        message_type="EmailQueued",
        body=b'{"email_id": "e-%d"}' % n,
        headers={H.MESSAGE_ID: f"msg-{n}", H.CONTENT_TYPE: "application/json"},
        intent="Publish",
        destination="EmailQueued",
    )


def write(engine: Engine, clock: FakeClock, count: int) -> list[OutgoingMessage]:
    """``count`` pending rows, as a unit of work's commit leaves them."""
    messages = [message(n) for n in range(count)]
    with engine.begin() as conn:
        outbox_rows.write(conn, messages, clock.now())
    return messages


def pending(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        query = select(outbox.c.message_id).where(outbox.c.dispatched_at.is_(None))
        return set(conn.execute(query).scalars())


def handled_ids(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


@pytest.fixture
def impatient(engine: Engine) -> Iterator[Engine]:
    """A second engine that gives up after 0.2 s on a lock instead of waiting for it."""
    if engine.dialect.name == "sqlite":
        other = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 0.2})
    else:
        other = create_engine(engine.url, poolclass=NullPool, connect_args={"options": "-c lock_timeout=200"})
    yield other
    other.dispose()


# -- the relay --------------------------------------------------------------------------


def test_the_relay_marks_rows_sent_only_once_the_publisher_confirmed(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    relay = Outbox(engine, publisher, clock)
    written = write(engine, clock, 2)

    publisher.failures = [ConnectionError("broker down")]
    assert relay.publish_committed(written) is False  # never raises: the sweep takes them
    assert pending(engine) == {"msg-0", "msg-1"}

    assert relay.publish_committed(written) is True
    assert pending(engine) == set() and [m.message_id for m in publisher.published] == ["msg-0", "msg-1"]


def test_marking_sent_survives_a_connection_lost_before_it_committed(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    relay = Outbox(engine, publisher, clock)
    written = write(engine, clock, 1)
    lost: list[str] = []

    def lose_the_first_update(conn: object, cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE outbox") and not lost:
            lost.append(statement)
            raise OperationalError(statement, {}, Exception("server closed the connection"), True)

    event.listen(engine, "before_cursor_execute", lose_the_first_update)
    try:
        with capture_logs() as logs:
            assert relay.publish_committed(written) is True
    finally:
        event.remove(engine, "before_cursor_execute", lose_the_first_update)

    assert lost and pending(engine) == set()
    assert [e["attempt"] for e in logs if e["event"] == "database.retry"] == [1]


# -- the sweep --------------------------------------------------------------------------


def test_the_sweep_publishes_pending_rows_once_as_they_were_written(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    sweeper = Outbox(engine, publisher, clock)
    written = write(engine, clock, 1)

    assert sweeper.sweep(timedelta(seconds=10)) == 0  # too young: the relay may still be at it
    clock.advance(10)
    assert sweeper.sweep(timedelta(seconds=10)) == 1
    assert sweeper.sweep(timedelta(seconds=10)) == 0
    assert publisher.published == written and sweeper.pending_count() == 0


@pytest.mark.parametrize("rows", [25, COPY_FROM_ROWS + 5], ids=["json", "copy"])
def test_a_commit_of_many_rows_reads_back_as_written(engine: Engine, rows: int) -> None:
    """Many rows, as JSON and by COPY on PostgreSQL (``bulk.py``): the same rows as an executemany writes,
    a quote, a tab, a backslash, a newline and non-ASCII in a header or body included."""
    clock, publisher = FakeClock(), RecordingPublisher()
    sweeper = Outbox(engine, publisher, clock)
    odd = 'a "b"\tc\\d\ne \u00e9\u2603'
    written = [message(n) for n in range(rows)]
    written[3] = replace(written[3], headers={**written[3].headers, "X-Odd": odd})
    written[7] = replace(written[7], body=json.dumps({"email_id": odd}).encode())
    with engine.begin() as conn:
        outbox_rows.write(conn, written, clock.now())

    assert sweeper.sweep(timedelta(0), limit=1000) == len(written)
    by_id = {m.message_id: m for m in publisher.published}
    assert [by_id[m.message_id] for m in written] == written


def test_a_failed_sweep_leaves_the_rows_pending_for_the_next_one(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    sweeper = Outbox(engine, publisher, clock)
    write(engine, clock, 1)
    publisher.failures = [ConnectionError("broker down")]

    with pytest.raises(ConnectionError):
        sweeper.sweep(timedelta(0))
    assert sweeper.pending_count() == 1

    assert sweeper.sweep(timedelta(0)) == 1  # the claim was given back: no wait for the lease


def test_the_sweep_publishes_outside_its_claim_transaction(engine: Engine, impatient: Engine) -> None:
    """While the publisher runs, another connection can read the claim and update the rows at once."""
    clock = FakeClock()
    write(engine, clock, 3)
    seen_while_publishing: list[tuple[int, int]] = []

    class TouchingPublisher:
        def publish(self, messages: Sequence[OutgoingMessage]) -> None:
            ids = [m.message_id for m in messages]
            with impatient.begin() as conn:  # fails within 0.2 s if the rows (or the file) are locked
                claimed = conn.execute(
                    select(func.count())
                    .select_from(outbox)
                    .where(outbox.c.message_id.in_(ids), outbox.c.claimed_until.is_not(None))
                ).scalar_one()
                updated = conn.execute(
                    update(outbox).where(outbox.c.message_id.in_(ids)).values(body=outbox.c.body)
                ).rowcount
            seen_while_publishing.append((int(claimed), int(updated)))

    assert Outbox(engine, TouchingPublisher(), clock).sweep(timedelta(0)) == 3
    assert seen_while_publishing == [(3, 3)]  # the claim was committed before publishing
    assert pending(engine) == set()


def test_a_sweeper_does_not_take_rows_another_one_is_publishing(engine: Engine) -> None:
    clock = FakeClock()
    write(engine, clock, 6)
    publishing, release = threading.Event(), threading.Event()
    slow_ids: list[str] = []

    class SlowPublisher:
        def publish(self, messages: Sequence[OutgoingMessage]) -> None:
            slow_ids.extend(m.message_id for m in messages)
            publishing.set()
            assert release.wait(WAIT)

    slow = Outbox(engine, SlowPublisher(), clock)
    other_publisher = RecordingPublisher()
    other = Outbox(engine, other_publisher, clock)
    thread = threading.Thread(target=lambda: slow.sweep(timedelta(0), limit=4))
    thread.start()
    try:
        assert publishing.wait(WAIT)
        assert other.sweep(timedelta(0)) == 2  # only the rows the first one did not claim
        assert other.sweep(timedelta(0)) == 0
    finally:
        release.set()
        thread.join(WAIT)

    other_ids = [m.message_id for m in other_publisher.published]
    assert len(slow_ids) == 4 and not set(slow_ids) & set(other_ids)
    assert sorted(slow_ids + other_ids) == sorted(f"msg-{n}" for n in range(6))
    assert pending(engine) == set()


def test_competing_sweepers_publish_every_row_exactly_once(engine: Engine) -> None:
    clock = FakeClock()
    write(engine, clock, 40)
    publishers = [RecordingPublisher(), RecordingPublisher()]
    start = threading.Barrier(2, timeout=WAIT)
    failures: list[BaseException] = []

    def sweep_until_empty(publisher: RecordingPublisher) -> None:
        sweeper = Outbox(engine, publisher, clock)
        try:
            start.wait()
            while sweeper.sweep(timedelta(0), limit=3):
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=sweep_until_empty, args=(p,)) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert not failures, failures
    ids = [m.message_id for p in publishers for m in p.published]
    assert sorted(ids) == sorted(f"msg-{n}" for n in range(40))  # each once: no row taken twice
    assert pending(engine) == set()


def test_rows_a_crashed_sweeper_claimed_are_taken_again_after_the_lease(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    lease = timedelta(minutes=2)
    write(engine, clock, 1)

    crashed = Outbox(engine, RecordingPublisher(), clock, lease=lease).claim(timedelta(0))
    assert [m.message_id for m in crashed.messages] == ["msg-0"]  # ...and then the process died

    sweeper = Outbox(engine, publisher, clock, lease=lease)
    assert sweeper.sweep(timedelta(0)) == 0  # still someone else's
    clock.advance(lease.total_seconds() - 1)
    assert sweeper.sweep(timedelta(0)) == 0
    clock.advance(1)
    assert sweeper.sweep(timedelta(0)) == 1
    assert [m.message_id for m in publisher.published] == ["msg-0"] and pending(engine) == set()


# -- housekeeping: each table its own purge ---------------------------------------------


def test_outbox_and_inbox_are_purged_separately(engine: Engine) -> None:
    clock = FakeClock()
    with SqlUnitOfWork(engine, clock) as uow:
        uow.inbox.record("in-1", "SendEmail")
        uow.commit()
    written = write(engine, clock, 2)
    relay = Outbox(engine, RecordingPublisher(), clock)
    later = clock.now() + timedelta(days=30)

    assert relay.purge(later) == 0  # pending rows are never purged
    relay.publish_committed(written[:1])
    assert relay.purge(clock.now()) == 0  # sent just now: kept
    assert relay.purge(later) == 1
    assert pending(engine) == {"msg-1"} and handled_ids(engine) == 1  # the inbox untouched

    assert purge_inbox(engine, clock.now()) == 0  # handled just now: kept
    assert purge_inbox(engine, later) == 1
    assert handled_ids(engine) == 0 and pending(engine) == {"msg-1"}  # the outbox untouched


def test_seen_ids_answer_for_both_inbox_and_provider_events(engine: Engine) -> None:
    clock = FakeClock()
    with SqlUnitOfWork(engine, clock) as uow:
        uow.inbox.record("in-1", "SendEmail")
        uow.provider_events.record("sendgrid", "ev-1", "e-1")
        assert uow.inbox.seen("in-1") and uow.provider_events.seen("sendgrid", "ev-1")  # staged
        uow.commit()
    with SqlUnitOfWork(engine, clock) as uow:
        uow.inbox.preload(["in-1", "in-2"])
        assert uow.inbox.seen("in-1") and not uow.inbox.seen("in-2")
        assert uow.provider_events.seen("sendgrid", "ev-1")
        assert not uow.provider_events.seen("sendgrid", "ev-2")
        assert not uow.provider_events.seen("other", "ev-1")


def test_provider_event_ids_are_purged_after_their_retention_only(engine: Engine) -> None:
    clock = FakeClock()
    with SqlUnitOfWork(engine, clock) as uow:
        uow.inbox.record("in-1", "RecordDeliveryReports")
        uow.provider_events.record("sendgrid", "ev-1", "e-1")
        uow.commit()
    assert purge_provider_events(engine, clock.now()) == 0  # received just now: kept (dedupes a re-post)
    assert purge_provider_events(engine, clock.now() + timedelta(days=31)) == 1
    with SqlUnitOfWork(engine, clock) as uow:
        assert not uow.provider_events.seen("sendgrid", "ev-1") and uow.inbox.seen("in-1")
