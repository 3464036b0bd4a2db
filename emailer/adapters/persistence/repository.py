"""The Email repository on SQL: maps the aggregate to rows and back, with optimistic versioning.

Loaded and added emails are kept in an identity map for the transaction; on
flush, new emails are inserted in bulk and changed ones updated with a version
check (a concurrent change raises ``ConcurrencyConflict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from contracts import AttachmentRef
from emailer.adapters.persistence.tables import attachments, emails, recipients, timeline
from emailer.domain import Email, EmailStatus, Recipient, RecipientStatus
from handlers.errors import ConcurrencyConflict


class SqlEmailRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._identity: dict[str, Email] = {}
        self._new: list[Email] = []
        self._loaded_version: dict[str, int] = {}
        self._absent: set[str] = set()

    # ------------------------------------------------------------------ port

    def add(self, email: Email) -> None:
        self._absent.discard(email.id)
        self._identity[email.id] = email
        self._new.append(email)

    def get(self, email_id: str) -> Email | None:
        if email_id in self._identity:
            return self._identity[email_id]
        if email_id in self._absent:
            return None
        row = self.conn.execute(select(emails).where(emails.c.id == email_id)).mappings().first()
        if row is None:
            return None
        return self._load(row)

    def preload(self, email_ids: Iterable[str]) -> None:
        wanted = set(email_ids) - self._identity.keys()
        if not wanted:
            return
        for row in self.conn.execute(select(emails).where(emails.c.id.in_(wanted))).mappings():
            self._load(row)
        self._absent |= wanted - self._identity.keys()

    def due(self, now: datetime, limit: int) -> list[Email]:
        query = (
            select(emails)
            .where(emails.c.due_at <= now)
            .order_by(emails.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        found = []
        for row in self.conn.execute(query).mappings().all():
            found.append(self._identity.get(row["id"]) or self._load(row))
        return found

    def touched(self) -> list[Email]:
        return list(self._identity.values())

    # --------------------------------------------------------------- loading

    def _load(self, row: Any) -> Email:
        email_id = row["id"]
        recipient_rows = self.conn.execute(
            select(recipients).where(recipients.c.email_id == email_id).order_by(recipients.c.position)
        ).mappings()
        attachment_rows = self.conn.execute(
            select(attachments).where(attachments.c.email_id == email_id).order_by(attachments.c.position)
        ).mappings()
        email = Email(
            id=email_id,
            status=EmailStatus(row["status"]),
            content=dict(row["content"]),
            metadata=dict(row["client_metadata"]),
            attachments=[
                AttachmentRef(
                    filename=a["filename"],
                    content_type=a["content_type"],
                    disposition=a["disposition"],
                    content_id=a["content_id"],
                    sha256=a["sha256"],
                    size=a["size"],
                )
                for a in attachment_rows
            ],
            recipients=[
                Recipient(
                    address=r["address"],
                    kind=r["kind"],
                    name=r["name"],
                    status=RecipientStatus(r["status"]),
                    status_reason=r["status_reason"],
                    status_at=r["status_at"],
                    opens=r["opens"],
                    clicks=r["clicks"],
                    complained=r["complained"],
                    unsubscribed=r["unsubscribed"],
                )
                for r in recipient_rows
            ],
            created_at=row["created_at"],
            send_at=row["send_at"],
            not_before=row["not_before"],
            due_at=row["due_at"],
            attempts=row["attempts"],
            provider=row["provider"],
            provider_message_id=row["provider_message_id"],
            last_error=row["last_error"],
            updated_at=row["updated_at"],
            version=row["version"],
            event_seq=row["event_seq"],
        )
        self._identity[email_id] = email
        self._loaded_version[email_id] = email.version
        return email

    # ---------------------------------------------------------------- saving

    def flush(self) -> None:
        new_ids = {e.id for e in self._new}
        if self._new:
            self._insert_new(self._new)
        changed = [e for e in self._identity.values() if e.id not in new_ids and e.dirty]
        for email in changed:
            self._update(email)
        timeline_rows = [
            {"email_id": e.id, "at": t.at, "kind": t.kind, "detail": t.detail}
            for e in self._identity.values()
            for t in e.new_timeline
        ]
        if timeline_rows:
            self.conn.execute(insert(timeline), timeline_rows)
        for email in self._identity.values():
            email.new_timeline.clear()
            email.dirty = False
        self._new = []

    def _insert_new(self, new: list[Email]) -> None:
        for email in new:
            email.version = 1
        self.conn.execute(insert(emails), [_email_row(e) for e in new])
        recipient_rows = [
            {"email_id": e.id, "position": i, **_recipient_row(r)}
            for e in new
            for i, r in enumerate(e.recipients)
        ]
        self.conn.execute(insert(recipients), recipient_rows)
        attachment_rows = [
            {
                "email_id": e.id,
                "position": i,
                "filename": a.filename,
                "content_type": a.content_type,
                "disposition": a.disposition,
                "content_id": a.content_id,
                "sha256": a.sha256,
                "size": a.size,
            }
            for e in new
            for i, a in enumerate(e.attachments)
        ]
        if attachment_rows:
            self.conn.execute(insert(attachments), attachment_rows)

    def _update(self, email: Email) -> None:
        expected = self._loaded_version[email.id]
        email.version = expected + 1
        row = _email_row(email)
        row.pop("id")
        result = self.conn.execute(
            update(emails).where(emails.c.id == email.id, emails.c.version == expected).values(**row)
        )
        if result.rowcount != 1:
            raise ConcurrencyConflict(f"email {email.id} changed concurrently (version {expected})")
        self._loaded_version[email.id] = email.version
        for position, r in enumerate(email.recipients):
            if r.changed:
                self.conn.execute(
                    update(recipients)
                    .where(recipients.c.email_id == email.id, recipients.c.position == position)
                    .values(**_recipient_row(r))
                )
                r.changed = False


def _email_row(e: Email) -> dict[str, Any]:
    return {
        "id": e.id,
        "status": e.status.value,
        "subject": e.content.get("subject"),
        "content": e.content,
        "client_metadata": e.metadata,
        "send_at": e.send_at,
        "not_before": e.not_before,
        "due_at": e.due_at,
        "attempts": e.attempts,
        "provider": e.provider,
        "provider_message_id": e.provider_message_id,
        "last_error": e.last_error,
        "created_at": e.created_at,
        "updated_at": e.updated_at or e.created_at,
        "version": e.version,
        "event_seq": e.event_seq,
    }


def _recipient_row(r: Recipient) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "address": r.address,
        "name": r.name,
        "status": r.status.value,
        "status_reason": r.status_reason,
        "status_at": r.status_at,
        "opens": r.opens,
        "clicks": r.clicks,
        "complained": r.complained,
        "unsubscribed": r.unsubscribed,
    }
