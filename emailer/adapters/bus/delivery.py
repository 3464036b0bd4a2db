"""What comes in from the bus: a ``Delivery``, raw (the body is never decoded here).

Outgoing messages are ``handlers.ports.OutgoingMessage``; only incoming ones
have a type of their own, because they must be settled (acked or requeued) on
the transport. The bus adapter fills a ``Delivery`` from a broker message and
keeps a private handle to settle it; a fake bus can build one without it
(``ack``/``requeue`` then only record the outcome in ``state``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts.wire import H, type_name
from emailer.adapters.bus.coalesce import one_write
from emailer.adapters.bus.errors import DeliveryAlreadySettled

DeliveryState = Literal["pending", "acked", "requeued"]


@dataclass
class Delivery:
    """One incoming message, raw: the bus never decodes the body.

    Settle it exactly once, from the thread that runs ``consume`` (AMQP channels
    are not thread-safe): ``ack`` once its effects are committed, ``requeue`` to
    have the broker deliver it again.
    """

    message_id: str
    message_type: str | None
    """The bare type name (``contracts.wire.type_name``), or None if the sender set none."""
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


def ack_all(deliveries: Sequence[Delivery]) -> None:
    """``ack`` each, in order, with their ``basic.ack`` frames in one socket write (``coalesce.py``).

    A batch of 50 committed together was 50 writes, each running the broker's TCP
    receive path on loopback. Deliveries of one batch share their consumer's channel;
    an ack that raises leaves the later ones pending, and the earlier ones are still sent.
    """
    channel = next((d._message.channel for d in deliveries if d._message is not None), None)
    if channel is None:
        for delivery in deliveries:
            delivery.ack()
        return
    with one_write(channel):
        for delivery in deliveries:
            delivery.ack()


def body_hash_id(body: bytes) -> str:
    """The fallback message id: stable across redeliveries of the same bytes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _message_id(headers: Mapping[str, str], props: Mapping[str, object], body: bytes) -> str:
    from_header = headers.get(H.MESSAGE_ID, "").strip()
    if from_header:
        return from_header
    from_property = props.get("message_id")
    if from_property:
        return _text(from_property)
    return body_hash_id(body)


def _message_type(headers: Mapping[str, str], props: Mapping[str, object]) -> str | None:
    # The header wins over the AMQP ``type`` property; both may be NServiceBus's long form.
    for raw in (headers.get(H.ENCLOSED_MESSAGE_TYPES, ""), _text(props.get("type") or "")):
        name = type_name(raw) if raw.strip() else ""
        if name:
            return name
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
