"""Commands: what Emailer is asked to do. Imperative names; each is handled exactly once."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field, field_validator, model_validator

from contracts.base import Command
from contracts.values import Address, Attachment, DeliveryReport, HeaderSafe, no_crlf

EmailId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="chosen by the sender; the idempotency key of the email",
        examples=["order-1234-shipped"],
    ),
]

MAX_RECIPIENTS = 1000
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ':' (RFC 5322 ftext)


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid RFC 5322 field name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by Emailer and cannot be given here")
        try:
            no_crlf(text)
        except ValueError as exc:
            raise ValueError(f"header {name!r}: {exc}") from None
    return value


class SendEmail(Command):
    """Send one email. Sent by any service to the ``emailer`` queue (or POST /v1/emails).

    Re-sending the same ``email_id`` is safe: it yields no second email. Every
    event about the email echoes ``metadata``.
    """

    email_id: EmailId
    from_: Address = Field(alias="from")
    reply_to: Address | None = None
    to: list[Address] = Field(min_length=1)
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(default_factory=list)
    subject: HeaderSafe | None = Field(default=None, min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    template_id: str | None = Field(default=None, max_length=255)
    template_data: dict[str, Any] | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    headers: Annotated[dict[str, str], AfterValidator(_headers)] = Field(default_factory=dict)
    categories: list[Annotated[HeaderSafe, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=10
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="echoed back on every event about this email"
    )
    send_at: AwareDatetime | None = Field(default=None, description="send no earlier than this")

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50 or sum(len(k) + len(v) for k, v in value.items()) > 8192:
            raise ValueError("at most 50 entries and 8 KiB of keys and values")
        return value

    @model_validator(mode="after")
    def _whole(self) -> SendEmail:
        if not (self.text or self.html or self.template_id):
            raise ValueError("give a body: 'text', 'html' or 'template_id'")
        if self.subject is None and not self.template_id:
            raise ValueError("'subject' is required unless a template provides it")
        count = len(self.to) + len(self.cc) + len(self.bcc)
        if count > MAX_RECIPIENTS:
            raise ValueError(f"{count} recipients; at most {MAX_RECIPIENTS} in one email")
        seen: set[str] = set()
        for address in [*self.to, *self.cc, *self.bcc]:
            key = address.email.lower()
            if key in seen:
                raise ValueError(f"recipient {address.email} appears more than once")
            seen.add(key)
        return self

    def recipients(self) -> list[tuple[str, Address]]:
        """(kind, address) for every recipient, in to, cc, bcc order."""
        return [
            *(("to", a) for a in self.to),
            *(("cc", a) for a in self.cc),
            *(("bcc", a) for a in self.bcc),
        ]


class CancelEmail(Command):
    """Cancel an email that has not yet been handed to the provider. Sent by any service."""

    email_id: EmailId
    reason: HeaderSafe | None = Field(default=None, max_length=500)


class DispatchEmail(Command):
    """Internal: hand a stored email to the provider now. Emailer sends it to itself."""

    email_id: EmailId


class RecordDeliveryReports(Command):
    """Internal: provider callbacks, mapped to neutral reports. Sent by the webhook gateway."""

    reports: list[DeliveryReport] = Field(min_length=1)
