"""What crosses the bus: an outgoing ``Envelope`` (already encoded) and an incoming ``Delivery``.

Both are plain data. The bus adapter fills a ``Delivery`` from a broker message
and keeps a private handle to settle it; a fake bus can build one without it
(``ack``/``requeue`` then only record the outcome in ``state``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from emailer.adapters.bus.errors import DeliveryAlreadySettled

MESSAGE_ID_HEADER = "NServiceBus.MessageId"
ENCLOSED_TYPES_HEADER = "NServiceBus.EnclosedMessageTypes"
CORRELATION_ID_HEADER = "NServiceBus.CorrelationId"

Intent = Literal["Send", "Publish"]
DeliveryState = Literal["pending", "acked", "requeued"]


@dataclass(frozen=True)
class Envelope:
    """One outgoing message, already encoded, with the headers the caller built.

    ``destination`` is the queue name for a Send and the routing key (the
    message type name) for a Publish.
    """

    message_id: str
    message_type: str
    body: bytes
    headers: Mapping[str, str]
    intent: Intent
    destination: str

    def __post_init__(self) -> None:
        if self.intent not in ("Send", "Publish"):
            raise ValueError(f"intent must be 'Send' or 'Publish', not {self.intent!r}")
        if not self.message_id:
            raise ValueError("an envelope needs a message id")
        if not self.destination:
            raise ValueError(f"{self.intent} of {self.message_type} has no destination")
        if not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes (encoded already), not {type(self.body).__name__}")


@dataclass
class Delivery:
    """One incoming message, raw: the bus never decodes the body.

    Settle it exactly once, from the thread that runs ``consume`` (AMQP channels
    are not thread-safe): ``ack`` once its effects are committed, ``requeue`` to
    have the broker deliver it again.
    """

    message_id: str
    message_type: str | None
    headers: dict[str, str]
    body: bytes
    redelivered: bool
    _message: Any = field(default=None, repr=False, compare=False)
    _state: DeliveryState = field(default="pending", repr=False, compare=False)

    @classmethod
    def from_transport(
        cls,
        *,
        headers: Mapping[str, object] | None,
        properties: Mapping[str, object] | None,
        body: bytes,
        redelivered: bool,
        message: Any = None,
    ) -> Delivery:
        """Build a delivery from what a transport hands over (headers + AMQP properties)."""
        text_headers = {str(key): _text(value) for key, value in (headers or {}).items()}
        props = properties or {}
        return cls(
            message_id=_message_id(text_headers, props, body),
            message_type=_message_type(text_headers, props),
            headers=text_headers,
            body=body,
            redelivered=redelivered,
            _message=message,
        )

    @property
    def state(self) -> DeliveryState:
        """``pending`` until settled, then ``acked`` or ``requeued``."""
        return self._state

    @property
    def settled(self) -> bool:
        return self._state != "pending"

    def ack(self) -> None:
        """Tell the broker the message is done with; it will not come again."""
        self._settle("acked")
        if self._message is not None:
            self._message.ack()

    def requeue(self) -> None:
        """Give the message back to the broker (reject with requeue) to be delivered again."""
        self._settle("requeued")
        if self._message is not None:
            self._message.reject(requeue=True)

    def _settle(self, state: DeliveryState) -> None:
        if self._state != "pending":
            raise DeliveryAlreadySettled(
                f"delivery {self.message_id} already {self._state}, cannot be {state}"
            )
        self._state = state


def body_hash_id(body: bytes) -> str:
    """The fallback message id: stable across redeliveries of the same bytes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _message_id(headers: Mapping[str, str], props: Mapping[str, object], body: bytes) -> str:
    from_header = headers.get(MESSAGE_ID_HEADER, "").strip()
    if from_header:
        return from_header
    from_property = props.get("message_id")
    if from_property:
        return _text(from_property)
    return body_hash_id(body)


def _message_type(headers: Mapping[str, str], props: Mapping[str, object]) -> str | None:
    # NServiceBus: "Ns.Type, Assembly, Version=...;Ns.IBase, ..." -> "Ns.Type"
    enclosed = headers.get(ENCLOSED_TYPES_HEADER, "")
    first = enclosed.split(";", 1)[0].split(",", 1)[0].strip()
    if first:
        return first
    from_property = props.get("type")
    if from_property:
        return _text(from_property)
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
