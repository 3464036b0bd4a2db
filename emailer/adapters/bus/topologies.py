# mypy: allow-untyped-calls
"""NServiceBus's two RabbitMQ routing topologies, beside Emailer's own (``EMAILER_TOPOLOGY``).

``native`` (the default) is ``topology.py``: commands to the input queue through
the default exchange, events to the topic exchange ``emailer.events`` with the
type name as routing key. The NServiceBus ones add what an endpoint using
NServiceBus's RabbitMQ transport expects, so it can send to Emailer and
subscribe to its events with no custom code (docs.particular.net, "RabbitMQ
transport: Routing topology"; the transport's ``ConventionalRoutingTopology``
and ``DirectRoutingTopology``):

* ``nsb-conventional``: a sender publishes to a *fanout exchange named after the
  destination endpoint*: Emailer declares the exchange ``emailer`` (its input
  queue's name) bound to the queue ``emailer``. Each event is also published to
  the fanout exchange ``Namespace:TypeName`` (bound, as the transport binds a
  type to its hierarchy, to ``System:Object`` and ``NServiceBus:IEvent``); a
  subscriber binds its own endpoint exchange to it.
* ``nsb-direct``: commands come through the default exchange, as in ``native``;
  each event is also published to ``amq.topic`` with the routing key the
  transport's ``DefaultRoutingKeyConvention`` gives the type: its full name with
  dots as dashes (``Emailer-Contracts-EmailQueued``; the documentation writes it
  ``Namespace.TypeName``); a subscriber binds ``<that key>.#``.

The copy for NServiceBus is the event as a .NET subscriber reads it: its body
in PascalCase (``contracts.casing``: System.Text.Json matches property names
case-sensitively by default, so ``email_id`` would leave ``EmailId`` unset),
``NServiceBus.EnclosedMessageTypes`` and the AMQP ``type`` the full .NET type
name ``Namespace.TypeName``, every other header as it is (same message id,
correlation and conversation ids). The native exchange keeps its copy, in the
contract's own casing, for Emailer's clients and ``emailer events tail``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kombu.entity import Exchange, Queue, binding

from contracts.base import Event, message_types
from contracts.casing import to_pascal
from contracts.wire import H
from handlers.ports import OutgoingMessage

TopologyName = Literal["native", "nsb-conventional", "nsb-direct"]
TOPOLOGIES: tuple[str, ...] = get_args(TopologyName)
DEFAULT_NSB_NAMESPACE = "Emailer.Contracts"
DIRECT_EXCHANGE = "amq.topic"
# What the conventional topology binds a published type to: its base class and its marker interface.
CONVENTIONAL_HIERARCHY = ("System:Object", "NServiceBus:IEvent")


def conventional_exchange(namespace: str, type_name: str) -> str:
    """The fanout exchange of an event type in the conventional topology: ``Namespace:TypeName``."""
    return f"{namespace}:{type_name}"


def direct_routing_key(namespace: str, type_name: str) -> str:
    """The routing key of an event type on ``amq.topic`` in the direct topology."""
    return f"{namespace}.{type_name}".replace(".", "-")


def dotnet_type(namespace: str, type_name: str) -> str:
    """The full .NET type name NServiceBus resolves an ``EnclosedMessageTypes`` value to."""
    return f"{namespace}.{type_name}"


@dataclass(frozen=True)
class Copy:
    """One more publication of an outgoing message: where, and as what."""

    exchange: str
    routing_key: str
    message: OutgoingMessage


@dataclass(frozen=True)
class NServiceBusRoutes:
    """What ``nsb-conventional`` / ``nsb-direct`` add to the native topology: declarations and copies."""

    name: TopologyName
    namespace: str
    input_queue: str

    def __post_init__(self) -> None:
        if self.name not in ("nsb-conventional", "nsb-direct"):
            raise ValueError(f"not an NServiceBus topology: {self.name!r}")

    @property
    def event_types(self) -> list[str]:
        return sorted(n for n, cls in message_types().items() if issubclass(cls, Event))

    def declare(self, channel: Any) -> None:
        """Declare what NServiceBus endpoints send to and subscribe at (idempotent)."""
        if self.name == "nsb-direct":
            return  # the default exchange and amq.topic always exist
        queue = Queue(
            self.input_queue,
            bindings=[binding(self._fanout(self.input_queue), routing_key="")],
            durable=True,
            auto_delete=False,
        )
        queue.declare(channel=channel)
        for base in CONVENTIONAL_HIERARCHY:
            self._fanout(base).declare(channel=channel)
        for type_name in self.event_types:
            exchange = self._fanout(conventional_exchange(self.namespace, type_name))
            exchange.declare(channel=channel)
            for base in CONVENTIONAL_HIERARCHY:
                channel.exchange_bind(destination=base, source=exchange.name, routing_key="")

    def copies(self, message: OutgoingMessage) -> list[Copy]:
        """The NServiceBus publication of an event (none for a command: it goes where it went)."""
        if message.intent != "Publish" or message.message_type not in self.event_types:
            return []
        model = message_types()[message.message_type]
        body = json.dumps(
            to_pascal(model, json.loads(message.body)), ensure_ascii=False, separators=(",", ":")
        ).encode()
        full_name = dotnet_type(self.namespace, message.message_type)
        headers = {**message.headers, H.ENCLOSED_MESSAGE_TYPES: full_name, H.CONTENT_TYPE: "application/json"}
        copy = dataclasses.replace(message, body=body, headers=headers, message_type=full_name)
        if self.name == "nsb-conventional":
            return [Copy(conventional_exchange(self.namespace, message.message_type), "", copy)]
        return [Copy(DIRECT_EXCHANGE, direct_routing_key(self.namespace, message.message_type), copy)]

    @staticmethod
    def _fanout(name: str) -> Exchange:
        return Exchange(name, type="fanout", durable=True, auto_delete=False)


def nservicebus_routes(name: str, namespace: str, input_queue: str) -> NServiceBusRoutes | None:
    """The NServiceBus routes for ``EMAILER_TOPOLOGY`` (None for ``native``)."""
    if name == "native":
        return None
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}: one of {', '.join(TOPOLOGIES)}")
    return NServiceBusRoutes(name, namespace, input_queue)  # type: ignore[arg-type]


def event_names(routes: NServiceBusRoutes | None, types: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each event type -> (exchange, routing key) of its NServiceBus copy (empty for ``native``)."""
    if routes is None:
        return {}
    if routes.name == "nsb-conventional":
        return {t: (conventional_exchange(routes.namespace, t), "") for t in types}
    return {t: (DIRECT_EXCHANGE, direct_routing_key(routes.namespace, t)) for t in types}
