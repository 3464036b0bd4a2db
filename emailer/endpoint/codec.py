"""Turning a transport delivery into a typed message (and refusing what cannot be one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from contracts import Message
from contracts.wire import type_name
from emailer.endpoint.registry import Registry, Route
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext


class IncomingDelivery(Protocol):
    """What decoding needs of a delivery, whatever transport brought it."""

    @property
    def message_id(self) -> str: ...

    @property
    def message_type(self) -> str | None:
        """The enclosed message type (bare or NServiceBus's long form), if the sender set one."""

    @property
    def headers(self) -> dict[str, str]: ...

    @property
    def body(self) -> bytes: ...


@dataclass(frozen=True)
class Decoded:
    route: Route
    message: Message
    context: MessageContext


def decode(delivery: IncomingDelivery, registry: Registry) -> Decoded:
    if not delivery.message_type:
        raise InvalidMessage(
            "no message type: set the NServiceBus.EnclosedMessageTypes header (or the AMQP type)"
        )
    name = type_name(delivery.message_type)
    route = registry.route(name)
    if route is None:
        raise InvalidMessage(
            f"Emailer does not handle {name!r}; it handles {', '.join(registry.message_types())}"
        )
    try:
        message = route.message_type.model_validate_json(delivery.body)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {name}: {describe(exc)}") from None
    return Decoded(route, message, MessageContext(delivery.message_id, name, delivery.headers))


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: problem; field: problem``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
