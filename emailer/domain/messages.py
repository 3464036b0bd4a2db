"""Where the aggregate meets the public contracts: values taken from a command, messages made for others.

The domain keeps its own plain values (``values.py``); the contracts are
pydantic models, converted here on the way in (a SendEmail) and on the way out
(the EmailQueued event, the delivery reports a local provider stands in for).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from contracts import Address, AttachmentRef, DeliveryReport, EmailQueued, ReportKind, SendEmail
from emailer.domain.recipient import Recipient
from emailer.domain.values import Attachment, Content, Mailbox


def mailbox_of(address: Address) -> Mailbox:
    return Mailbox(email=str(address.email), name=address.name)


def content_of(command: SendEmail) -> Content:
    return Content(
        from_=mailbox_of(command.from_),
        reply_to=mailbox_of(command.reply_to) if command.reply_to else None,
        subject=command.subject,
        text=command.text,
        html=command.html,
        template_id=command.template_id,
        template_data=command.template_data,
        headers=dict(command.headers),
        categories=tuple(command.categories),
    )


def recipients_of(command: SendEmail) -> list[Recipient]:
    return [Recipient(address=a.email, name=a.name, kind=kind) for kind, a in command.recipients()]


def attachment_ref(attachment: Attachment) -> AttachmentRef:
    """The claim check the public events carry."""
    return AttachmentRef(
        filename=attachment.filename,
        content_type=attachment.content_type,
        disposition=attachment.disposition,
        content_id=attachment.content_id,
        sha256=attachment.sha256,
        size=attachment.size,
        key=attachment.sha256,
    )


def email_queued(command: SendEmail, attachments: Iterable[Attachment], now: datetime) -> EmailQueued:
    return EmailQueued(
        email_id=command.email_id,
        metadata=dict(command.metadata),
        occurred_at=now,
        from_=command.from_,
        to=command.to,
        cc=command.cc,
        bcc=command.bcc,
        subject=command.subject,
        template_id=command.template_id,
        attachments=[attachment_ref(a) for a in attachments],
        categories=command.categories,
        send_at=command.send_at,
    )


def delivered_reports(
    email_id: str,
    recipients: Iterable[Recipient],
    provider: str,
    provider_message_id: str | None,
    now: datetime,
) -> list[DeliveryReport]:
    """What a provider whose acceptance is delivery would report by webhook, one per recipient."""
    return [
        DeliveryReport(
            provider=provider,
            provider_event_id=f"{email_id}:{r.address}:delivered",
            email_id=email_id,
            recipient=r.address,
            kind=ReportKind.DELIVERED,
            occurred_at=now,
            provider_message_id=provider_message_id,
        )
        for r in recipients
    ]
