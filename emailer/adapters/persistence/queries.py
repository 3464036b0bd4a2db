"""The read side: an email's state, recipients and timeline as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from emailer.adapters.persistence.tables import attachments, emails, recipients, timeline


def email_view(engine: Engine, email_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(emails).where(emails.c.id == email_id)).mappings().first()
        if row is None:
            return None
        recips = (
            conn.execute(
                select(recipients).where(recipients.c.email_id == email_id).order_by(recipients.c.position)
            )
            .mappings()
            .all()
        )
        files = (
            conn.execute(
                select(attachments).where(attachments.c.email_id == email_id).order_by(attachments.c.position)
            )
            .mappings()
            .all()
        )
        steps = (
            conn.execute(select(timeline).where(timeline.c.email_id == email_id).order_by(timeline.c.id))
            .mappings()
            .all()
        )
    return {
        "email_id": row["id"],
        "status": row["status"],
        "subject": row["subject"],
        "from": row["content"].get("from"),
        "metadata": row["client_metadata"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "send_at": _iso(row["send_at"]),
        "next_attempt_at": _iso(row["not_before"]) if row["status"] == "queued" else None,
        "attempts": row["attempts"],
        "provider": row["provider"],
        "provider_message_id": row["provider_message_id"],
        "last_error": row["last_error"],
        "recipients": [
            {
                "address": r["address"],
                "name": r["name"],
                "kind": r["kind"],
                "status": r["status"],
                "reason": r["status_reason"],
                "status_at": _iso(r["status_at"]),
                "opens": r["opens"],
                "clicks": r["clicks"],
                "complained": r["complained"],
                "unsubscribed": r["unsubscribed"],
            }
            for r in recips
        ],
        "attachments": [
            {
                "filename": a["filename"],
                "content_type": a["content_type"],
                "size": a["size"],
                "sha256": a["sha256"],
                "purged_at": _iso(a["purged_at"]),
            }
            for a in files
        ],
        "timeline": [{"at": _iso(s["at"]), "kind": s["kind"], **s["detail"]} for s in steps],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
