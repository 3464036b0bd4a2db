"""The AsyncAPI 3.0 document of Emailer's bus: what it receives where, what it publishes where, as what.

Generated from the contracts (payload schemas from ``contracts.schema``, the
NServiceBus headers of ``contracts.wire``) and the topology in force (queue and
exchange names, ``EMAILER_TOPOLOGY``), so it cannot drift from either. Served
by the gateway at ``/asyncapi.json`` and written by ``emailer contracts asyncapi``.
Operations are Emailer's: it *receives* commands on its input queue and
*sends* events; a subscriber binds its own queue to the channel of each event.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from contracts.base import Event
from contracts.schema import message_schema, public_message_types
from contracts.version import CONTRACTS_VERSION
from contracts.wire import H
from emailer.adapters.bus.topologies import (
    DIRECT_EXCHANGE,
    NServiceBusRoutes,
    conventional_exchange,
    direct_routing_key,
    dotnet_type,
)
from emailer.adapters.bus.topology import Topology

AMQP_BINDING = "0.3.0"
SCHEMAS = "#/components/schemas/{model}"
WIRE_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}:\d{6} Z$"
_HEADERS: dict[str, str] = {
    H.MESSAGE_ID: "the message id (also the AMQP message-id); events: stable, dedupe on it",
    H.CORRELATION_ID: "the id of the command that started it all (a sender's own, or its message id)",
    H.CONVERSATION_ID: "the conversation the message belongs to",
    H.RELATED_TO: "the message id of the message whose handling sent this one",
    H.ENCLOSED_MESSAGE_TYPES: "the message type: TypeName, Namespace.TypeName or an assembly-qualified name",
    H.MESSAGE_INTENT: "Send (commands) or Publish (events)",
    H.REPLY_TO_ADDRESS: "the sender's queue",
    H.ORIGINATING_ENDPOINT: "the sending endpoint",
    H.TIME_SENT: "when it was sent, NServiceBus's format yyyy-MM-dd HH:mm:ss:ffffff Z (UTC)",
    H.CONTENT_TYPE: "application/json",
}
_EVENT_REQUIRED = [
    H.MESSAGE_ID, H.CORRELATION_ID, H.CONVERSATION_ID, H.ENCLOSED_MESSAGE_TYPES, H.MESSAGE_INTENT,
    H.TIME_SENT, H.CONTENT_TYPE,
]  # fmt: skip


def asyncapi_document(
    topology: Topology,
    *,
    nservicebus: NServiceBusRoutes | None = None,
    bus_url: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a JSON-ready dict) for this topology."""
    types = public_message_types()
    commands = sorted(n for n, cls in types.items() if not issubclass(cls, Event))
    events = sorted(n for n, cls in types.items() if issubclass(cls, Event))
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name in sorted(types):
        schema = message_schema(types[name], ref_template=SCHEMAS)
        for key in ("$schema", "$id"):  # a component is resolved within this document
            schema.pop(key, None)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        messages[name] = _message(name, event=name in events)
    channels: dict[str, Any] = {"input": _input_channel(topology, commands)}
    operations: dict[str, Any] = {
        "receiveCommands": {
            "action": "receive",
            "channel": {"$ref": "#/channels/input"},
            "summary": "Emailer takes commands from its input queue (send them to the queue by name)",
            "messages": [{"$ref": f"#/channels/input/messages/{name}"} for name in commands],
        }
    }
    for name in events:
        channel = f"event.{name}"
        channels[channel] = _event_channel(topology, name)
        operations[f"publish{name}"] = _publish(channel, name, "to the events exchange")
    if nservicebus is not None:
        _add_nservicebus(nservicebus, events, channels, operations)
    channels["error"] = {
        "address": topology.error_queue,
        "title": "error queue",
        "description": "Messages that failed for good, with NServiceBus.FailedQ, NServiceBus.ExceptionInfo.* "
        "and NServiceBus.TimeOfFailure headers.",
        "bindings": {"amqp": _queue_binding(topology.error_queue)},
    }
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "id": f"urn:emailer:asyncapi:{CONTRACTS_VERSION}",
        "info": {
            "title": "Emailer",
            "version": CONTRACTS_VERSION,
            "description": "SendEmail in over RabbitMQ, provider-neutral lifecycle events out. "
            "Headers follow NServiceBus's names; bodies are JSON (UTF-8). "
            "Contracts evolve additively: ignore unknown fields.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
    server = _server(bus_url)
    if server is not None:
        document["servers"] = {"rabbitmq": server}
        for channel in channels.values():
            channel["servers"] = [{"$ref": "#/servers/rabbitmq"}]
    return document


def _message(name: str, *, event: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "type": "object",
        "properties": {key: {"type": "string", "description": text} for key, text in _HEADERS.items()},
    }
    headers["properties"][H.TIME_SENT]["pattern"] = WIRE_TIME_PATTERN
    headers["properties"][H.MESSAGE_INTENT]["enum"] = ["Publish" if event else "Send"]
    if event:
        headers["required"] = list(_EVENT_REQUIRED)
    return {
        "name": name,
        "title": name,
        "contentType": "application/json",
        "headers": headers,
        "payload": {"$ref": SCHEMAS.format(model=name)},
        "correlationId": {
            "description": "the correlation id of the command the message is about",
            "location": f"$message.header#/{H.CORRELATION_ID}",
        },
        "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING}},
    }


def _input_channel(topology: Topology, commands: list[str]) -> dict[str, Any]:
    return {
        "address": topology.input_queue,
        "title": "input queue",
        "description": "Emailer's input queue: publish a command to the default exchange with the queue's "
        "name as routing key (mandatory, persistent, with publisher confirms).",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in commands},
        "bindings": {"amqp": _queue_binding(topology.input_queue)},
    }


def _event_channel(topology: Topology, name: str) -> dict[str, Any]:
    return {
        "address": name,
        "title": f"{name} events",
        "description": f"Routing key {name} on the topic exchange {topology.events_exchange}: bind your own "
        "durable queue with it (or '#' for every event).",
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {"amqp": _exchange_binding(topology.events_exchange, "topic")},
    }


def _add_nservicebus(
    routes: NServiceBusRoutes, events: list[str], channels: dict[str, Any], operations: dict[str, Any]
) -> None:
    """The NServiceBus copies: PascalCase bodies, the .NET type name in EnclosedMessageTypes."""
    if routes.name == "nsb-conventional":
        channels["nservicebus.input"] = {
            "address": routes.input_queue,
            "title": "input exchange (NServiceBus conventional topology)",
            "description": "A fanout exchange named after the endpoint, bound to its input queue: where an "
            "NServiceBus sender using the conventional routing topology sends. PascalCase bodies accepted.",
            "bindings": {"amqp": _exchange_binding(routes.input_queue, "fanout")},
        }
    for name in events:
        if routes.name == "nsb-conventional":
            exchange = conventional_exchange(routes.namespace, name)
            address, binding = exchange, _exchange_binding(exchange, "fanout")
            how = f"the fanout exchange {exchange}: bind your endpoint's exchange to it"
        else:
            address = direct_routing_key(routes.namespace, name)
            binding = _exchange_binding(DIRECT_EXCHANGE, "topic")
            how = f"{DIRECT_EXCHANGE} with routing key {address}: bind your queue with '{address}.#'"
        channel = f"nservicebus.{name}"
        channels[channel] = {
            "address": address,
            "title": f"{name} for NServiceBus endpoints",
            "description": f"The {name} event as {dotnet_type(routes.namespace, name)} with PascalCase "
            f"properties (System.Text.Json), on {how}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"amqp": binding},
        }
        operations[f"publish{name}ToNServiceBus"] = _publish(channel, name, "for NServiceBus endpoints")


def _publish(channel: str, name: str, where: str) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": f"Emailer publishes {name} {where}",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": False, "bindingVersion": AMQP_BINDING}},
    }


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "is": "queue",
        "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
        "bindingVersion": AMQP_BINDING,
    }


def _exchange_binding(name: str, kind: str) -> dict[str, Any]:
    return {
        "is": "routingKey",
        "exchange": {"name": name, "type": kind, "durable": True, "autoDelete": False},
        "bindingVersion": AMQP_BINDING,
    }


def _server(bus_url: str | None) -> dict[str, Any] | None:
    """The broker, without credentials (none for the embedded bus)."""
    if not bus_url or not bus_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return None
    parts = urlsplit(bus_url)
    secure = parts.scheme == "amqps"
    host = f"{parts.hostname or 'localhost'}:{parts.port or (5671 if secure else 5672)}"
    vhost = parts.path[1:] or "/"
    return {
        "host": host,
        "protocol": "amqps" if secure else "amqp",
        "protocolVersion": "0-9-1",
        "pathname": "/" + vhost.lstrip("/") if vhost != "/" else "/",
        "description": f"RabbitMQ, virtual host {vhost!r}",
    }
