"""Commands: what Emailer is asked to do. Imperative names; each is handled exactly once."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from contracts.base import Command
from contracts.fields import (
    Body,
    Category,
    HeaderName,
    HeaderValue,
    MetadataKey,
    MetadataValue,
    Reason,
    Subject,
    TemplateData,
)
from contracts.values import Address, Attachment, DeliveryReport

EmailId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="chosen by the sender; the idempotency key of the email",
        examples=["order-1234-shipped"],
    ),
]

MAX_RECIPIENTS = 1000
MAX_HEADERS = 100
MAX_CATEGORIES = 10
MAX_METADATA_ENTRIES = 50
MAX_DISPATCH_IDS = 1000
"""At most this many emails woken by one ``DispatchEmail`` (``email_id`` and ``more_email_ids``)."""
MAX_CUSTOM_ARGS_BYTES = 10_000
"""SendGrid's limit on ``custom_args``, which carry the metadata and the email id."""
RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "return-path",
        "received",
        "dkim-signature",
        "domainkey-signature",
        "x-sg-id",
        "x-sg-eid",
    }
)
RESERVED_HEADER_PREFIXES = ("content-", "resent-")
"""Set by Emailer or the provider (or the mail system): a custom header may not set them."""


def _headers(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_HEADERS:
        raise ValueError(f"{len(value)} headers; at most {MAX_HEADERS}")
    for name in value:
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES):
            raise ValueError(f"header {name!r} is set by Emailer or the provider and cannot be given here")
    return value


def _refuse(loc: tuple[str | int, ...], rule: str, message: str) -> None:
    """A rule over several fields broken: a validation error located at the field to change.

    (A plain ValueError in a model validator would be located at the whole model.)
    """
    error = PydanticCustomError(rule, "{reason}", {"reason": message})
    raise ValidationError.from_exception_data(
        "SendEmail", [InitErrorDetails(type=error, loc=loc, input=None)]
    )


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
    subject: Subject | None = None
    text: Body | None = None
    html: Body | None = None
    template_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
    template_data: TemplateData | None = Field(
        default=None, description="at most 32 levels deep and 1 MiB as JSON"
    )
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    headers: Annotated[dict[HeaderName, HeaderValue], AfterValidator(_headers)] = Field(
        default_factory=dict, description="custom headers; the ones Emailer or the provider set are refused"
    )
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        description="echoed back on every event about this email; with the email id at most 10,000 "
        "bytes as JSON (the provider carries it)",
    )
    send_at: AwareDatetime | None = Field(default=None, description="send no earlier than this")

    @field_validator("from_")
    @classmethod
    def _ascii_sender(cls, value: Address) -> Address:
        if not value.email.isascii():
            raise ValueError("the sender's address must be ASCII (SendGrid refuses others)")
        return value

    @field_validator("categories")
    @classmethod
    def _distinct_categories(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("categories must be distinct (SendGrid refuses repeats)")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_ENTRIES:
            raise ValueError(f"{len(value)} entries; at most {MAX_METADATA_ENTRIES}")
        if "email_id" in value:
            raise ValueError("the key 'email_id' is Emailer's own")
        return value

    @model_validator(mode="after")
    def _whole(self) -> SendEmail:
        """Rules over several fields; each error names the field to change (never just "the body")."""
        args = {**self.metadata, "email_id": self.email_id}
        if (
            _json_bytes_at_most(args) > MAX_CUSTOM_ARGS_BYTES
            and (custom_args := len(json.dumps(args, ensure_ascii=False).encode())) > MAX_CUSTOM_ARGS_BYTES
        ):
            _refuse(
                ("metadata",),
                "custom_args_too_large",
                f"metadata and email_id are {custom_args} bytes as JSON; "
                f"the provider takes at most {MAX_CUSTOM_ARGS_BYTES}",
            )
        if not (self.text or self.html or self.template_id):
            _refuse(("text",), "body_missing", "give a body: 'text', 'html' or 'template_id'")
        if self.subject is None and not self.template_id:
            _refuse(("subject",), "subject_missing", "'subject' is required unless a template provides it")
        count = 0
        for kind, addresses in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            count += len(addresses)
            if count > MAX_RECIPIENTS:
                _refuse(
                    (kind,),
                    "too_many_recipients",
                    f"{len(self.to) + len(self.cc) + len(self.bcc)} recipients; "
                    f"at most {MAX_RECIPIENTS} in one email",
                )
        seen: set[str] = set()
        for kind, addresses in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            for index, address in enumerate(addresses):
                key = address.email.lower()
                if key in seen:
                    _refuse(
                        (kind, index, "email"),
                        "duplicate_recipient",
                        f"recipient {address.email} appears more than once",
                    )
                seen.add(key)
        return self

    def recipients(self) -> list[tuple[str, Address]]:
        """(kind, address) for every recipient, in to, cc, bcc order."""
        return [
            *(("to", a) for a in self.to),
            *(("cc", a) for a in self.cc),
            *(("bcc", a) for a in self.bcc),
        ]


def _json_bytes_at_most(strings: dict[str, str]) -> int:
    """A bound on ``len(json.dumps(strings, ensure_ascii=False).encode())``, without encoding: a character
    is at most 6 bytes in it (``\\u001f``; UTF-8 takes at most 4), and each entry adds 6 (two pairs of
    quotes, a colon, a comma) to the braces. Most emails are far below the limit and need no more."""
    return 2 + sum(6 * (len(key) + len(value) + 1) for key, value in strings.items())


class CancelEmail(Command):
    """Cancel an email that has not yet been handed to the provider. Sent by any service."""

    email_id: EmailId
    reason: Reason | None = None


class DispatchEmail(Command):
    """Internal: hand stored emails to the provider now. Emailer sends it to itself.

    One message wakes the emails one transaction made due (an accepting batch, a scheduler pass):
    ``email_id`` and ``more_email_ids``, in that order. A message written before there was
    ``more_email_ids`` wakes its one email, as it always did.
    """

    email_id: EmailId
    more_email_ids: tuple[EmailId, ...] = Field(default=(), max_length=MAX_DISPATCH_IDS - 1)
    """A tuple, not a list with a default factory: ``model_construct`` asks a factory for its signature
    (``inspect.signature``) every time, and a packed message builds one per email it wakes."""

    def email_ids(self) -> list[str]:
        """Every email this message wakes, ``email_id`` first."""
        return [self.email_id, *self.more_email_ids]

    @model_serializer(mode="wrap")
    def _without_empty_more(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A message of one email is written as it always was: no ``more_email_ids``."""
        data: dict[str, Any] = handler(self)
        if not self.more_email_ids:
            data.pop("more_email_ids", None)
        return data


class RecordDeliveryReports(Command):
    """Internal: provider callbacks, mapped to neutral reports. Sent by the webhook gateway."""

    reports: list[DeliveryReport] = Field(min_length=1)
