"""The bus adapter: kombu (RabbitMQ or ``memory://``) moving already-encoded messages.

kombu lives in this package only; the rest of the code sees ``Envelope`` (out),
``Delivery`` (in) and ``KombuBus``.
"""

from emailer.adapters.bus.envelope import Delivery, Envelope
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
    "Envelope",
    "KombuBus",
    "PublishFailed",
    "PublishNotConfirmed",
    "Topology",
]
