"""The read side: an email's state, recipients and timeline as plain JSON-ready data.

It reads the aggregate through the repository (so rows are mapped in one place,
``mapping.py``) and adds what only the read side shows: the timeline and when
each attachment's bytes were purged. What this module owns is the shape of the
JSON (``GET /v1/emails/{id}``, ``emailer status``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from emailer.adapters.persistence.mapping import Row, mailbox_json
from emailer.adapters.persistence.repository import SqlEmailRepository
from emailer.adapters.persistence.tables import attachments, timeline
from emailer.domain import Email, EmailStatus


def email_view(engine: Engine, email_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        email = SqlEmailRepository(conn).get(email_id)
        if email is None:
            return None
        purged = conn.execute(
            select(attachments.c.purged_at)
            .where(attachments.c.email_id == email_id)
            .order_by(attachments.c.position)
        ).scalars()
        purged_at = list(purged)
        steps = (
            conn.execute(select(timeline).where(timeline.c.email_id == email_id).order_by(timeline.c.id))
            .mappings()
            .all()
        )
    return _view(email, purged_at, steps)


def _view(email: Email, purged_at: Sequence[datetime | None], steps: Sequence[Row]) -> dict[str, Any]:
    queued = email.status is EmailStatus.QUEUED
    return {
        "email_id": email.id,
        "status": email.status.value,
        "subject": email.content.subject,
        "from": mailbox_json(email.content.from_),
        "metadata": email.metadata,
        "created_at": _iso(email.created_at),
        "updated_at": _iso(email.updated_at),
        "send_at": _iso(email.send_at),
        "next_attempt_at": _iso(email.not_before) if queued else None,
        "attempts": email.attempts,
        "provider": email.provider,
        "provider_message_id": email.provider_message_id,
        "last_error": email.last_error,
        "completed_at": _iso(email.completed_at),
        "recipients": [
            {
                "address": r.address,
                "name": r.name,
                "kind": r.kind,
                "status": r.status.value,
                "reason": r.status_reason,
                "status_at": _iso(r.status_at),
                "opens": r.opens,
                "clicks": r.clicks,
                "complained": r.complained,
                "unsubscribed": r.unsubscribed,
            }
            for r in email.recipients
        ],
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "purged_at": _iso(purged),
            }
            for a, purged in zip(email.attachments, purged_at, strict=True)
        ],
        "timeline": [{"at": _iso(s["at"]), "kind": s["kind"], **s["detail"]} for s in steps],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
