"""Every SendEmail the contract accepts is stored, on SQLite and on PostgreSQL, and read back equal.

Through the real handler (``send_email``) and the SQL unit of work's commit, as
the worker stores a command; then loaded by a fresh unit of work and compared
with the command, field by field, and by its content hash. What the contract
refuses is the unit half's business (``tests/unit/test_send_email_properties.py``).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from pydantic import ValidationError
from sqlalchemy import Engine, delete

from contracts import SendEmail
from emailer.adapters.persistence.tables import attachments, emails, inbox, outbox, recipients, timeline
from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork
from emailer.domain import RetryPolicy
from emailer.domain.messages import content_of, recipients_of
from handlers.ports import MessageContext
from handlers.send_email import content_hash, send_email
from tests.fakes import FakeBlobStore, FakeClock
from tests.strategies import BLOBS, PROPERTY_SETTINGS, payloads

NUMBERS_JSONB_CHANGES = {
    "email_id": "numbers",
    "from": {"email": "shop@example.net"},
    "to": [{"email": "ann@example.net"}],
    "template_id": "d-1",
    "template_data": {"negative_zero": -0.0, "one": 1.0, "tenth": 0.1, "big": 2.0**52},
}
"""PostgreSQL's jsonb reads these back as 0, 1, 0.1 and 4503599627370496: equal, but not the same JSON."""


def accepted(payload: dict[str, Any]) -> SendEmail | None:
    try:
        return SendEmail.model_validate_json(json.dumps(payload, ensure_ascii=False).encode())
    except ValidationError:
        return None


def forget(engine: Engine, email_id: str) -> None:
    """Each example starts from an empty database (ids repeat across examples)."""
    with engine.begin() as conn:
        for table in (timeline, recipients, attachments):
            conn.execute(delete(table).where(table.c.email_id == email_id))
        conn.execute(delete(emails).where(emails.c.id == email_id))
        conn.execute(delete(outbox))
        conn.execute(delete(inbox))


def test_every_accepted_command_is_stored_and_read_back_equal(engine: Engine) -> None:
    clock, blobs = FakeClock(), FakeBlobStore()
    for blob in BLOBS:
        blobs.put(blob)

    @PROPERTY_SETTINGS
    @given(payloads(bad=False))
    @example(NUMBERS_JSONB_CHANGES)
    def stored_and_read_back(payload: dict[str, Any]) -> None:
        command = accepted(payload)
        if command is None:
            return
        forget(engine, command.email_id)
        uow = SqlUnitOfWork(engine, clock)
        with uow:
            uow.context = MessageContext("m-1", "SendEmail")
            send_email(command, uow, blobs, clock, RetryPolicy())
            uow.inbox.record("m-1", "SendEmail")
            uow.commit()
        with SqlUnitOfWork(engine, clock) as reader:
            loaded = reader.emails.get(command.email_id)
        assert loaded is not None
        assert loaded.content == content_of(command)
        assert [(r.kind, r.address, r.name) for r in loaded.recipients] == [
            (r.kind, r.address, r.name) for r in recipients_of(command)
        ]
        assert loaded.metadata == command.metadata
        assert loaded.send_at == command.send_at
        assert [(a.filename, a.content_type, a.disposition, a.content_id) for a in loaded.attachments] == [
            (a.filename, a.content_type, a.disposition, a.content_id) for a in command.attachments
        ]
        assert loaded.content_hash == loaded.computed_content_hash() == content_hash(command)
        with SqlUnitOfWork(engine, clock) as again:  # a re-send of the same command is the same email
            stored = again.emails.get(command.email_id)
            assert stored is not None
            stored.content_hash = None  # as if stored before migration 0003_f
            stored.check_resend(content_hash(command))

    stored_and_read_back()
