"""The purge and the garbage collector on SQLite and PostgreSQL: reference counts over the attachment
rows, the retention, the grace period for fresh uploads, and the lock a SendEmail holds."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from contracts import DispatchEmail
from emailer.adapters.persistence.blob_refs import PurgeRules, collect_garbage, purge_attachments, release
from emailer.adapters.persistence.queries import email_view
from emailer.adapters.persistence.tables import attachments
from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
from emailer.domain import RetryPolicy
from handlers.dispatch_email import dispatch_email
from handlers.ports import MessageContext
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, RecordingProvider

POLICY = RetryPolicy(jitter=0.0)
SHARED = b"%PDF-1.4 the terms and conditions \x00\x01"
KEY = hashlib.sha256(SHARED).hexdigest()
NOW_RULES = PurgeRules(retention=timedelta(0), grace=timedelta(minutes=10))


def attachment(data: bytes = SHARED, filename: str = "terms.pdf") -> dict[str, Any]:
    return {
        "filename": filename,
        "content_type": "application/pdf",
        "content": base64.b64encode(data).decode(),
    }


def accept(engine: Engine, blobs: FakeBlobStore, clock: FakeClock, *files: dict[str, Any]) -> str:
    command = send_email(attachments=list(files))
    uow = SqlUnitOfWork(engine, clock)
    with uow:
        uow.context = MessageContext(f"m-{command.email_id}", "SendEmail")
        handle_send_email(command, uow, blobs, clock, POLICY)
        uow.commit()
    return command.email_id


def send(engine: Engine, blobs: FakeBlobStore, clock: FakeClock, email_id: str) -> None:
    provider = RecordingProvider()
    dispatch_email(
        DispatchEmail(email_id=email_id), SqlUnitOfWork(engine, clock), blobs, provider, clock, POLICY
    )
    assert len(provider.sent) == 1


def purged_at(engine: Engine, email_id: str) -> list[Any]:
    with engine.connect() as conn:
        query = select(attachments.c.purged_at).where(attachments.c.email_id == email_id)
        return list(conn.execute(query).scalars())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def blobs(clock: FakeClock) -> FakeBlobStore:
    return FakeBlobStore(clock)


def test_an_accepted_emails_blob_is_purged_and_the_timeline_says_so(
    engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(engine, blobs, clock, attachment())
    send(engine, blobs, clock, email_id)
    clock.advance(601)  # past the grace period of the upload

    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 1

    assert KEY not in blobs.blobs
    assert purged_at(engine, email_id) == [clock.now()]
    view = email_view(engine, email_id)
    assert view is not None and view["attachments"][0]["purged_at"] == clock.now().isoformat()
    assert view["timeline"][-1]["kind"] == "attachments_purged"
    assert view["timeline"][-1]["files"] == ["terms.pdf"]
    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 0  # nothing left to do


def test_a_blob_another_pending_email_needs_is_kept_until_that_one_is_accepted(
    engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    first = accept(engine, blobs, clock, attachment())
    second = accept(engine, blobs, clock, attachment(filename="same-terms.pdf"))
    send(engine, blobs, clock, first)
    clock.advance(601)

    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 0
    assert KEY in blobs.blobs and purged_at(engine, first) == [None]

    send(engine, blobs, clock, second)  # it still has its bytes
    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 1
    assert KEY not in blobs.blobs
    assert purged_at(engine, first) == purged_at(engine, second) == [clock.now()]


def test_retention_keeps_the_blob_for_its_days(
    engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    rules = PurgeRules(retention=timedelta(days=2), grace=timedelta(minutes=10))
    email_id = accept(engine, blobs, clock, attachment())
    send(engine, blobs, clock, email_id)

    clock.advance(86400)
    assert purge_attachments(engine, blobs, clock, rules) == 0 and KEY in blobs.blobs
    clock.advance(86401)
    assert purge_attachments(engine, blobs, clock, rules) == 1 and KEY not in blobs.blobs


def test_a_fresh_upload_of_the_same_content_is_kept_through_the_grace_period(
    engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(engine, blobs, clock, attachment())
    send(engine, blobs, clock, email_id)
    clock.advance(3600)
    blobs.put(SHARED)  # another service uploads the same file; its SendEmail is on its way

    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 0 and KEY in blobs.blobs
    clock.advance(601)
    assert purge_attachments(engine, blobs, clock, NOW_RULES) == 1 and KEY not in blobs.blobs


def test_gc_removes_unused_uploads_after_the_grace_and_keeps_what_is_needed(
    engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    unused = blobs.put(b"uploaded, never sent")
    pending = accept(engine, blobs, clock, attachment())

    assert collect_garbage(engine, blobs, clock, NOW_RULES) == 0  # all within the grace period
    clock.advance(601)
    assert collect_garbage(engine, blobs, clock, NOW_RULES) == 1
    assert unused not in blobs.blobs and KEY in blobs.blobs
    assert purged_at(engine, pending) == [None]


@pytest.mark.postgres
def test_a_purge_waits_for_a_send_email_holding_the_blob_and_then_keeps_it(
    pg_engine: Engine, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    first = accept(pg_engine, blobs, clock, attachment())
    send(pg_engine, blobs, clock, first)
    clock.advance(601)
    command = send_email(attachments=[attachment()])
    holder = SqlUnitOfWork(pg_engine, clock)
    outcome: list[bool] = []
    with holder:
        holder.context = MessageContext("m-second", "SendEmail")
        handle_send_email(command, holder, blobs, clock, POLICY)  # holds the blob's lock, not committed
        purge = threading.Thread(
            target=lambda: outcome.append(release(pg_engine, blobs, KEY, clock.now(), NOW_RULES))
        )
        purge.start()
        purge.join(1.0)
        assert purge.is_alive(), "the purge went ahead while a SendEmail held the blob"
        holder.commit()
    purge.join(10)

    assert outcome == [False]  # it saw the second email's reference
    assert KEY in blobs.blobs
