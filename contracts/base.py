"""The base classes of every message, and the registry that maps a type name to its class.

A message's type name (``SendEmail``, ``EmailQueued``) is what travels in the
``NServiceBus.EnclosedMessageTypes`` header and, for events, is the routing key
on the topic exchange.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

_REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """Plain, frozen data. Unknown fields are ignored so contracts can grow."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    intent: ClassVar[str] = "Send"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ not in ("Command", "Event", "EmailEvent", "RecipientEvent"):
            _REGISTRY[cls.__name__] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


class Command(Message):
    """Something Emailer is asked to do: sent to its input queue, handled once."""

    intent: ClassVar[str] = "Send"


class Event(Message):
    """Something that happened: published to the events exchange, routing key = type name."""

    intent: ClassVar[str] = "Publish"


def message_types() -> dict[str, type[Message]]:
    """Every concrete message class by type name (a copy)."""
    return dict(_REGISTRY)
