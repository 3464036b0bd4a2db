"""What an email says, as one hash: an email id names one email, and a re-send must say the same.

The hash covers everything that makes the email what it is (sender, recipients
by kind, subject, bodies, template and its data, headers, categories,
attachments, metadata, ``send_at``) and nothing of how it travelled (message
ids, headers of the transport). Numbers in ``template_data`` count by value
(``1.0`` is ``1``), as the database keeps them. Attachments count by what they are, not how
they arrived: file name, type, disposition, Content-ID and the sha256 of the
bytes, so the same bytes sent inline or as a blob reference hash alike (the
blob store is content-addressed; the size follows from the bytes).

The form is canonical JSON (sorted keys, no spaces, ASCII escapes, ``send_at``
in UTC) hashed with SHA-256, prefixed by a version so that a later form can
tell its hashes from these. Values equal to "absent" (None, empty lists and
maps) are left out, so a field a future contract adds with an empty default
does not change the hash of what was stored before it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from emailer.domain.recipient import Recipient
from emailer.domain.values import Attachment, Content, Mailbox

VERSION = "v1"


def content_hash(
    content: Content,
    recipients: Iterable[Recipient],
    attachments: Iterable[Attachment],
    metadata: Mapping[str, str],
    send_at: datetime | None,
) -> str:
    """``v1:<sha256 hex>`` of the canonical form of the email."""
    canonical = {
        "from": _mailbox(content.from_),
        "reply_to": _mailbox(content.reply_to) if content.reply_to else None,
        "subject": content.subject,
        "text": content.text,
        "html": content.html,
        "template_id": content.template_id,
        "template_data": _numbers_as_stored(content.template_data),
        "headers": dict(content.headers),
        "categories": list(content.categories),
        "recipients": [_present({"kind": r.kind, "email": r.address, "name": r.name}) for r in recipients],
        "attachments": [
            _present(
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "disposition": a.disposition,
                    "content_id": a.content_id,
                    "sha256": a.sha256,
                }
            )
            for a in attachments
        ],
        "metadata": dict(metadata),
        "send_at": send_at.astimezone(UTC).isoformat() if send_at else None,
    }
    encoded = json.dumps(_present(canonical), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{VERSION}:{hashlib.sha256(encoded.encode('ascii')).hexdigest()}"


def _numbers_as_stored(value: Any) -> Any:
    """Integral floats as integers: PostgreSQL's jsonb gives ``1.0`` and ``-0.0`` back as ``1`` and ``0``.

    So an email's hash is the same whether it is computed from the command or from
    what the database returns (the property test found ``-0.0`` otherwise).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers_as_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_stored(v) for v in value]
    return value


def _mailbox(mailbox: Mailbox) -> dict[str, Any]:
    return _present({"email": mailbox.email, "name": mailbox.name})


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}
