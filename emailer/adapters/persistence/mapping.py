"""Rows to the Email aggregate and back: the one place that knows which column holds which field.

``tables.py`` is the schema; this module builds ``Email``, ``Recipient`` and the
value objects from rows, and rows from them. The repository (the write side)
and ``queries.py`` (the read side) both go through it. The ``content`` column
keeps the JSON shape it always had, so stored rows stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from sqlalchemy import RowMapping

from emailer.domain import (
    Attachment,
    Content,
    Email,
    EmailStatus,
    Mailbox,
    Recipient,
    RecipientStatus,
    TimelineEntry,
)

Row = RowMapping
"""A row as ``Result.mappings()`` gives it: column name to value."""


# ------------------------------------------------------------------ rows -> domain


def email_from_rows(row: Row, recipient_rows: Iterable[Row], attachment_rows: Iterable[Row]) -> Email:
    """The aggregate from its ``emails`` row and its recipient and attachment rows (in position order)."""
    return Email(
        id=row["id"],
        status=EmailStatus(row["status"]),
        content=content_from_json(row["content"]),
        metadata=dict(row["client_metadata"]),
        attachments=[attachment_from_row(a) for a in attachment_rows],
        recipients=[recipient_from_row(r) for r in recipient_rows],
        created_at=row["created_at"],
        send_at=row["send_at"],
        not_before=row["not_before"],
        due_at=row["due_at"],
        attempts=row["attempts"],
        provider=row["provider"],
        provider_message_id=row["provider_message_id"],
        last_error=row["last_error"],
        content_hash=row["content_hash"],
        updated_at=row["updated_at"],
        version=row["version"],
        event_seq=row["event_seq"],
        completed_at=row["completed_at"],
        attempt_started_at=row["attempt_started_at"],
        # A row stored before 0004_k recorded the creating command's ids correlates by its own
        # id, whoever handles it later (one answer for every load, never a later message's ids).
        correlation_id=row["correlation_id"] or row["id"],
        conversation_id=row["conversation_id"],
    )


def recipient_from_row(row: Row) -> Recipient:
    return Recipient(
        address=row["address"],
        kind=row["kind"],
        name=row["name"],
        status=RecipientStatus(row["status"]),
        status_reason=row["status_reason"],
        status_at=row["status_at"],
        opens=row["opens"],
        clicks=row["clicks"],
        complained=row["complained"],
        unsubscribed=row["unsubscribed"],
        delivery_implied=row["delivery_implied"],
    )


def attachment_from_row(row: Row) -> Attachment:
    return Attachment(
        filename=row["filename"],
        content_type=row["content_type"],
        disposition=cast(Literal["attachment", "inline"], row["disposition"]),
        content_id=row["content_id"],
        sha256=row["sha256"],
        size=row["size"],
    )


def content_from_json(data: Mapping[str, Any]) -> Content:
    return Content(
        from_=mailbox_from_json(data["from"]),
        reply_to=mailbox_from_json(data["reply_to"]) if data.get("reply_to") else None,
        subject=data.get("subject"),
        text=data.get("text"),
        html=data.get("html"),
        template_id=data.get("template_id"),
        template_data=data.get("template_data"),
        headers=dict(data.get("headers") or {}),
        categories=tuple(data.get("categories") or ()),
    )


def mailbox_from_json(data: Mapping[str, Any]) -> Mailbox:
    return Mailbox(email=data["email"], name=data.get("name"))


# ------------------------------------------------------------------ domain -> rows


def email_row(e: Email) -> dict[str, Any]:
    return {
        "id": e.id,
        "status": e.status.value,
        "subject": e.content.subject,
        "content": content_json(e.content),
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
        "completed_at": e.completed_at,
        "content_hash": e.content_hash,
        "attempt_started_at": e.attempt_started_at,
        "correlation_id": e.correlation_id,
        "conversation_id": e.conversation_id,
    }


IMMUTABLE_EMAIL_COLUMNS = frozenset(
    {"id", "subject", "content", "client_metadata", "created_at", "content_hash"}
)
"""Written when the email is stored and never changed by a transition: an update leaves them alone
(the content and metadata are the bulk of a row, and their JSON would be encoded again for nothing)."""


def email_changes_row(e: Email) -> dict[str, Any]:
    """The columns a transition may change, for an update of a stored email."""
    return {k: v for k, v in email_row(e).items() if k not in IMMUTABLE_EMAIL_COLUMNS}


def recipient_row(r: Recipient) -> dict[str, Any]:
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
        "delivery_implied": r.delivery_implied,
    }


def attachment_row(a: Attachment) -> dict[str, Any]:
    return {
        "filename": a.filename,
        "content_type": a.content_type,
        "disposition": a.disposition,
        "content_id": a.content_id,
        "sha256": a.sha256,
        "size": a.size,
    }


def timeline_row(email_id: str, entry: TimelineEntry) -> dict[str, Any]:
    return {"email_id": email_id, "at": entry.at, "kind": entry.kind, "detail": entry.detail}


def content_json(c: Content) -> dict[str, Any]:
    return {
        "from": mailbox_json(c.from_),
        "reply_to": mailbox_json(c.reply_to) if c.reply_to else None,
        "subject": c.subject,
        "text": c.text,
        "html": c.html,
        "template_id": c.template_id,
        "template_data": c.template_data,
        "headers": dict(c.headers),
        "categories": list(c.categories),
    }


def mailbox_json(m: Mailbox) -> dict[str, Any]:
    return {"email": m.email, "name": m.name}
