"""Turning a transport delivery into a typed message (and refusing what cannot be one).

A body is read as the contract spells its fields (``email_id``). One that does
not validate so, and whose keys name the fields in another casing (``EmailId``
as an NServiceBus endpoint's System.Text.Json writes them, or ``emailId``), is
read again with them renamed (``contracts.casing``): senders need no
serializer settings of their own.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from contracts import Message
from contracts.casing import from_other_casing, needs_renaming
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


def decode(delivery: IncomingDelivery, registry: Registry, *, trusted: bool = False) -> Decoded:
    """``trusted``: its signature proved Emailer wrote it (the route's trusted decoder may be used)."""
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
    message = None
    if trusted and route.trusted_decoder is not None:
        with contextlib.suppress(ValueError):
            message = route.trusted_decoder(delivery.body)
    if message is None:
        message = decode_body(route.message_type, delivery.body, name)
    return Decoded(route, message, MessageContext(delivery.message_id, name, delivery.headers))


def decode_body(model: type[Message], body: bytes, name: str) -> Message:
    """``body`` as ``model``: as the contract spells it, else with its fields' names in another casing."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not needs_renaming(model, data):
        raise InvalidMessage(f"invalid {name}: {describe(first)}") from None
    try:
        return model.model_validate_json(json.dumps(from_other_casing(model, data)))
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {name}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: problem; field: problem``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
