"""The bus adapter: kombu (RabbitMQ or ``memory://``) moving already-encoded messages.

kombu lives in this package only; the rest of the code sees ``KombuBus`` (the
``handlers.ports.Publisher`` for ``OutgoingMessage``, and the consumer of the
input queue) and ``Delivery`` (one incoming message, to ack or requeue).
"""

from emailer.adapters.bus.delivery import Delivery
from emailer.adapters.bus.errors import (
    BusError,
    BusUnavailable,
    DeliveryAlreadySettled,
    PublishFailed,
    PublishNotConfirmed,
)
from emailer.adapters.bus.kombu_bus import KombuBus
from emailer.adapters.bus.topology import Topology

__all__ = [
    "BusError",
    "BusUnavailable",
    "Delivery",
    "DeliveryAlreadySettled",
    "KombuBus",
    "PublishFailed",
    "PublishNotConfirmed",
    "Topology",
]
