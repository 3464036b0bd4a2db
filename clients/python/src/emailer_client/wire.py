# mypy: allow-untyped-calls
"""The wire around a message, as Emailer reads and writes it: NServiceBus headers, the events exchange."""

from __future__ import annotations

import json
import types
import typing
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kombu.entity import Exchange

from contracts.base import Message
from contracts.events import EmailEvent
from contracts.wire import H, type_name, wire_time

PERSISTENT = 2


def command_headers(
    message: Message,
    *,
    message_id: str,
    correlation_id: str | None,
    conversation_id: str | None,
    sender: str,
) -> dict[str, str]:
    """The NServiceBus headers of a Send from ``sender``; ids the caller gives are kept."""
    return {
        H.MESSAGE_ID: message_id,
        H.CORRELATION_ID: correlation_id or message_id,
        H.CONVERSATION_ID: conversation_id or str(uuid.uuid4()),
        H.ENCLOSED_MESSAGE_TYPES: message.type_name(),
        H.MESSAGE_INTENT: "Send",
        H.CONTENT_TYPE: "application/json",
        H.TIME_SENT: wire_time(datetime.now(UTC)),
        H.ORIGINATING_ENDPOINT: sender,
        H.REPLY_TO_ADDRESS: sender,
    }


def body(message: Message) -> bytes:
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()


def events_exchange(name: str) -> Exchange:
    """Emailer's events exchange, declared with the same arguments Emailer uses (idempotent)."""
    return Exchange(name, type="topic", durable=True, auto_delete=False)


def event_types(wanted: Any) -> tuple[type[EmailEvent], ...]:
    """``EmailDeliveryStarted``, ``A | B`` or an iterable of event classes, as a tuple of classes."""
    if isinstance(wanted, types.UnionType) or typing.get_origin(wanted) is typing.Union:
        found = typing.get_args(wanted)
    elif isinstance(wanted, type):
        found = (wanted,)
    else:
        found = tuple(wanted)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, EmailEvent)):
            raise TypeError(f"{cls!r} is not an Emailer event class")
    return typing.cast(tuple[type[EmailEvent], ...], found)


def decode(
    headers: Mapping[str, Any],
    properties: Mapping[str, Any],
    raw: bytes | str,
    wanted: Iterable[type[EmailEvent]],
) -> tuple[str, EmailEvent] | None:
    """(message id, event) if the message is one of ``wanted``; None otherwise. Invalid bodies raise."""
    enclosed = str(headers.get(H.ENCLOSED_MESSAGE_TYPES) or properties.get("type") or "")
    name = type_name(enclosed) if enclosed else ""
    for cls in wanted:
        if cls.type_name() == name:
            text = raw.decode() if isinstance(raw, bytes) else raw
            event = cls.model_validate(json.loads(text))
            message_id = str(headers.get(H.MESSAGE_ID) or properties.get("message_id") or "")
            return message_id, event
    return None
