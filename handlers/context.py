"""The message being handled, and the messages a handler sends or publishes because of it.

Header names follow NServiceBus, so other endpoints and tools can read them.
Correlation and conversation ids flow from the incoming message to everything
sent while handling it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from contracts import Command, Event, Message

ENDPOINT = "emailer"


class H:
    """NServiceBus header names."""

    MESSAGE_ID = "NServiceBus.MessageId"
    CORRELATION_ID = "NServiceBus.CorrelationId"
    CONVERSATION_ID = "NServiceBus.ConversationId"
    RELATED_TO = "NServiceBus.RelatedTo"
    ENCLOSED_MESSAGE_TYPES = "NServiceBus.EnclosedMessageTypes"
    MESSAGE_INTENT = "NServiceBus.MessageIntent"
    REPLY_TO_ADDRESS = "NServiceBus.ReplyToAddress"
    ORIGINATING_ENDPOINT = "NServiceBus.OriginatingEndpoint"
    TIME_SENT = "NServiceBus.TimeSent"
    CONTENT_TYPE = "NServiceBus.ContentType"


def wire_time(moment: datetime) -> str:
    """NServiceBus's date format on the wire: ``yyyy-MM-dd HH:mm:ss:ffffff Z`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S:%f Z")


@dataclass(frozen=True)
class MessageContext:
    """What a handler may know of the incoming message: ids and headers, never the transport."""

    message_id: str
    message_type: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str:
        return self.headers.get(H.CORRELATION_ID) or self.message_id

    @property
    def conversation_id(self) -> str:
        return self.headers.get(H.CONVERSATION_ID) or self.message_id

    @classmethod
    def originating(cls, message_type: str = "Scheduled") -> MessageContext:
        """A context for work no message started (the scheduler, the HTTP API)."""
        return cls(message_id=str(uuid.uuid4()), message_type=message_type)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send or publish, already encoded; the outbox stores exactly this."""

    message_id: str
    message_type: str
    body: bytes
    headers: Mapping[str, str]
    intent: Literal["Send", "Publish"]
    destination: str


def outgoing(
    message: Message,
    context: MessageContext,
    *,
    message_id: str,
    now: datetime,
    reply_to: str = ENDPOINT,
    destination: str | None = None,
) -> OutgoingMessage:
    """Encode ``message`` with the headers that tie it to the message being handled."""
    intent: Literal["Send", "Publish"] = "Publish" if isinstance(message, Event) else "Send"
    if not isinstance(message, Event | Command):  # pragma: no cover - programming error
        raise TypeError(f"{type(message).__name__} is neither a command nor an event")
    name = message.type_name()
    headers = {
        H.MESSAGE_ID: message_id,
        H.CORRELATION_ID: context.correlation_id,
        H.CONVERSATION_ID: context.conversation_id,
        H.RELATED_TO: context.message_id,
        H.ENCLOSED_MESSAGE_TYPES: name,
        H.MESSAGE_INTENT: intent,
        H.REPLY_TO_ADDRESS: reply_to,
        H.ORIGINATING_ENDPOINT: ENDPOINT,
        H.TIME_SENT: wire_time(now),
        H.CONTENT_TYPE: "application/json",
    }
    return OutgoingMessage(
        message_id=message_id,
        message_type=name,
        body=message.model_dump_json(by_alias=True).encode(),
        headers=headers,
        intent=intent,
        destination=destination or (name if intent == "Publish" else reply_to),
    )
