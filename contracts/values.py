"""Value types shared by commands and events: addresses, attachments, delivery reports."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from contracts.fields import ContentId, DisplayName, EmailAddress, FileName, header_safe

INLINE_ATTACHMENT_MAX_BYTES = 2 * 1024 * 1024
"""The ceiling for one inline attachment whatever the configuration; bigger ones travel as references."""
INLINE_CONTENT_DEFAULT_MAX_BYTES = 256 * 1024
"""Inline content a SendEmail may carry in all (decoded), unless EMAILER_INLINE_ATTACHMENTS_MAX_BYTES
says otherwise; the rest goes through the blob store (POST /v1/attachments or the claim-check helper)."""
SHA256_HEX = r"^[0-9a-f]{64}$"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Address(_Value):
    """A mailbox: an address and an optional display name."""

    email: EmailAddress
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
    sha256: str = Field(pattern=SHA256_HEX, description="content address in the blob store")
    size: int = Field(ge=0)
    key: str | None = Field(
        default=None, pattern=SHA256_HEX, description="the blob store key (content-addressed: the sha256)"
    )

    @model_validator(mode="before")
    @classmethod
    def _key_is_the_sha256(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("key") and data.get("sha256"):
            return {**data, "key": data["sha256"]}
        return data


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
        default=None,
        description="the bytes, base64-encoded; small files only: 256 KiB decoded per command by default",
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256_HEX, description="key of bytes already in the blob store"
    )
    size: int | None = Field(default=None, ge=0, description="with sha256: the blob's size, checked")
    key: str | None = Field(
        default=None,
        pattern=SHA256_HEX,
        description="the reference's blob store key, as POST /v1/attachments answers it; equals sha256",
    )

    @model_validator(mode="before")
    @classmethod
    def _key_names_the_blob(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("key") and not data.get("sha256") and "content" not in data:
            return {**data, "sha256": data["key"]}  # a reference given by its key alone
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if self.key is not None and self.key != self.sha256:
            raise ValueError("'key' and 'sha256' name different blobs (the key is the sha256)")
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


class AttachmentReference(_Value):
    """A blob in the store, ready to put in ``SendEmail.attachments``: what ``POST /v1/attachments``
    and the claim-check helper answer."""

    key: str = Field(pattern=SHA256_HEX, description="the blob store key (the sha256)")
    sha256: str = Field(pattern=SHA256_HEX)
    size: int = Field(ge=0)
    filename: FileName
    content_type: ContentType = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: ContentId | None = None


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
    RESUBSCRIBED = "resubscribed"
    """Recorded on the timeline only: no public event."""
    UNKNOWN = "unknown"


class DeliveryReport(_Value):
    """One provider callback about one recipient, already mapped to provider-neutral terms."""

    provider: str
    provider_event_id: str = Field(description="the provider's id of this callback, for dedupe")
    email_id: str
    recipient: EmailAddress
    kind: ReportKind
    occurred_at: AwareDatetime
    provider_message_id: str | None = None
    reason: str | None = None
    url: str | None = None
    user_agent: str | None = None
    provider_event_type: str | None = Field(default=None, description="the provider's own name")
    mta_response: str | None = Field(default=None, description="the receiving server's answer, if any")
    bounce_type: str | None = Field(default=None, description="the provider's bounce type (bounce, blocked)")
    bounce_classification: str | None = Field(
        default=None, description="the provider's classification of a bounce (e.g. Invalid Address)"
    )
    machine_open: bool = Field(default=False, description="an open made by a machine (a mail privacy proxy)")
    attempt: int | None = Field(default=None, ge=0, description="the provider's attempt count (deferrals)")
