"""Value types shared by commands and events: addresses, attachments, delivery reports."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from contracts.fields import ContentId, DisplayName, FileName, header_safe

INLINE_ATTACHMENT_MAX_BYTES = 2 * 1024 * 1024
"""Largest attachment a command may carry inline; bigger ones travel as references."""


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Address(_Value):
    """A mailbox: an address and an optional display name."""

    email: EmailStr
    name: DisplayName | None = None

ContentType = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;.*)?$", max_length=255),
    AfterValidator(header_safe),  # the parameters after ';' go into a MIME header as they are
]


class AttachmentRef(_Value):
    """An attachment as events and the database know it: where its bytes are, never the bytes."""

    filename: FileName
    content_type: ContentType = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: ContentId | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="content address in the blob store")
    size: int = Field(ge=0)


class Attachment(_Value):
    """An attachment in a SendEmail: small content inline (base64), or a blob store reference.

    Exactly one of ``content`` and ``sha256`` is given. Inline content is moved to
    the blob store before the email is stored; events carry only the reference.
    """

    filename: FileName
    content_type: ContentType = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: ContentId | None = None
    content: Base64Bytes | None = Field(
        default=None, description="the bytes, base64-encoded; at most 2 MiB decoded"
    )
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="key of bytes already in the blob store"
    )
    size: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.content is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'content' (inline bytes) and 'sha256' (a reference)")
        if self.content is not None and len(self.content) > INLINE_ATTACHMENT_MAX_BYTES:
            raise ValueError(
                f"inline content is {len(self.content)} bytes; at most "
                f"{INLINE_ATTACHMENT_MAX_BYTES} may travel inline"
            )
        if self.disposition == "inline" and not self.content_id:
            raise ValueError("an inline attachment needs a content_id")
        return self


class ReportKind(StrEnum):
    """What a provider callback says happened to one recipient, in Emailer's words."""

    PROCESSED = "processed"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    BLOCKED = "blocked"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


class DeliveryReport(_Value):
    """One provider callback about one recipient, already mapped to provider-neutral terms."""

    provider: str
    provider_event_id: str = Field(description="the provider's id of this callback, for dedupe")
    email_id: str
    recipient: EmailStr
    kind: ReportKind
    occurred_at: AwareDatetime
    provider_message_id: str | None = None
    reason: str | None = None
    url: str | None = None
    user_agent: str | None = None
    provider_event_type: str | None = Field(default=None, description="the provider's own name")
