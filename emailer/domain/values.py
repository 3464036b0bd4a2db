"""Value objects of the Email aggregate: who it is from, what it says, what it carries, what happened.

Plain frozen dataclasses: the domain's state holds no pydantic model. The public
contracts are built from these only when an event is emitted (``messages.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Mailbox:
    """An address and an optional display name (validated at the edge, by the contracts)."""

    email: str
    name: str | None = None


@dataclass(frozen=True)
class Content:
    """What the email says and how it is headed: everything a provider needs besides recipients."""

    from_: Mailbox
    reply_to: Mailbox | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    template_id: str | None = None
    template_data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """An attachment as the email keeps it: where its bytes are in the blob store, never the bytes."""

    filename: str
    sha256: str
    """The content address (key) of the bytes in the blob store."""
    size: int
    content_type: str = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: str | None = None


@dataclass(frozen=True)
class TimelineEntry:
    """One step in an email's life, as a person reads it in ``emailer status``."""

    at: datetime
    kind: str
    detail: dict[str, Any]
