"""Emailer's public messages: the commands other services send and the events they subscribe to.

Other services import only this package. It does no I/O and imports nothing
from ``emailer`` or ``handlers``. Contracts evolve additively: unknown fields
are ignored and every new field has a default.
"""

from contracts.base import Command, Event, Message, message_types
from contracts.commands import CancelEmail, DispatchEmail, RecordDeliveryReports, SendEmail
from contracts.events import (
    EmailCancelled,
    EmailDeliveryCompleted,
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailQueued,
    EmailRecipientClicked,
    EmailRecipientComplained,
    EmailRecipientDeferred,
    EmailRecipientDelivered,
    EmailRecipientDeliveryFailed,
    EmailRecipientOpened,
    EmailRecipientUnsubscribed,
    RecipientOutcome,
)
from contracts.values import (
    Address,
    Attachment,
    AttachmentRef,
    AttachmentReference,
    DeliveryReport,
    ReportKind,
)
from contracts.version import CONTRACTS_VERSION

__all__ = [
    "CONTRACTS_VERSION",
    "Address",
    "Attachment",
    "AttachmentRef",
    "AttachmentReference",
    "CancelEmail",
    "Command",
    "DeliveryReport",
    "DispatchEmail",
    "EmailCancelled",
    "EmailDeliveryCompleted",
    "EmailDeliveryFailed",
    "EmailDeliveryStarted",
    "EmailQueued",
    "EmailRecipientClicked",
    "EmailRecipientComplained",
    "EmailRecipientDeferred",
    "EmailRecipientDelivered",
    "EmailRecipientDeliveryFailed",
    "EmailRecipientOpened",
    "EmailRecipientUnsubscribed",
    "Event",
    "Message",
    "RecipientOutcome",
    "RecordDeliveryReports",
    "ReportKind",
    "SendEmail",
    "message_types",
]
