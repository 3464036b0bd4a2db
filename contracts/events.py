"""Events: what happened to an email. Published to the events exchange; routing key = type name.

Every event carries ``email_id``, the sender's ``metadata`` and ``occurred_at``;
its transport message id is stable, so a subscriber can dedupe on it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from contracts.base import Event
from contracts.values import Address, AttachmentRef


class EmailEvent(Event):
    """Fields every email event has."""

    email_id: str
    metadata: dict[str, str] = Field(default_factory=dict)
    occurred_at: AwareDatetime


class EmailQueued(EmailEvent):
    """The email was accepted and stored; it will be sent (at ``send_at`` if given)."""

    from_: Address = Field(alias="from")
    to: list[Address]
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(default_factory=list)
    subject: str | None = None
    template_id: str | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    send_at: AwareDatetime | None = None


class EmailDeliveryStarted(EmailEvent):
    """The provider accepted the email for delivery; per-recipient events follow."""

    provider: str
    provider_message_id: str | None = None
    attempt: int = 1


class EmailDeliveryFailed(EmailEvent):
    """The email will not be sent: the provider refused it, or the retry budget ran out."""

    reason: str
    provider: str | None = None
    attempts: int = 0
    permanent: bool = Field(
        default=True,
        description=(
            "always true: a failure that can still be retried is not reported, so every "
            "EmailDeliveryFailed is final (kept so that existing subscribers keep reading it)"
        ),
    )
    provider_status: int | None = None


class RecipientEvent(EmailEvent):
    """Fields every per-recipient event has."""

    recipient: EmailStr
    provider: str | None = None
    provider_message_id: str | None = None


class EmailRecipientDelivered(RecipientEvent):
    """The recipient's mail server accepted the message."""


class EmailRecipientDeliveryFailed(RecipientEvent):
    """The message will not reach this recipient: bounced, dropped, blocked, or suppressed.

    ``suppressed``: the address is on Emailer's suppression list (an earlier hard bounce,
    complaint or unsubscribe, or an operator's entry); it was not sent to, and ``reason``
    says why it is listed.
    """

    failure: Literal["bounced", "dropped", "blocked", "suppressed"]
    reason: str | None = None
    bounce_classification: str | None = None


class EmailRecipientDeferred(RecipientEvent):
    """The recipient's server asked the provider to try again later; it will."""

    reason: str | None = None
    attempt: int | None = Field(default=None, description="the provider's attempt count, when it says")


class EmailRecipientOpened(RecipientEvent):
    """The recipient opened the message (as far as open tracking can tell)."""

    user_agent: str | None = None
    machine_open: bool = Field(
        default=False, description="opened by a machine (a mail privacy proxy), not necessarily a person"
    )


class EmailRecipientClicked(RecipientEvent):
    """The recipient clicked a tracked link."""

    url: str | None = None
    user_agent: str | None = None


class EmailRecipientComplained(RecipientEvent):
    """The recipient marked the message as spam."""


class EmailRecipientUnsubscribed(RecipientEvent):
    """The recipient unsubscribed through the provider's link."""


class RecipientOutcome(BaseModel):
    """How delivery ended for one recipient."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    recipient: EmailStr
    outcome: Literal["delivered", "failed"]
    reason: str | None = None
    at: AwareDatetime | None = None


class EmailDeliveryCompleted(EmailEvent):
    """Every recipient has a final outcome (delivered or failed): nothing more will be tried.

    Published once per email, after the per-recipient events that settled it.
    Engagement (opens, clicks, complaints) may still follow.
    """

    outcomes: list[RecipientOutcome]


class EmailCancelled(EmailEvent):
    """The email was cancelled before it was handed to the provider."""

    reason: str | None = None
