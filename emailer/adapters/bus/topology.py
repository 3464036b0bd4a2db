# mypy: allow-untyped-calls
"""The RabbitMQ topology the emailer endpoint owns: its input queue, events exchange, error queue.

The names are data so tests (and a second endpoint on the same broker) can use
their own; ``declare`` is idempotent and is what ``KombuBus.connect`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kombu.entity import Exchange, Queue, binding


@dataclass(frozen=True)
class Topology:
    """Names of the queues and exchange; builds the kombu entities for them."""

    input_queue: str = "emailer"
    events_exchange: str = "emailer.events"
    error_queue: str = "error"

    def events(self) -> Exchange:
        """The durable topic exchange events are published to (routing key = type name)."""
        return Exchange(self.events_exchange, type="topic", durable=True, auto_delete=False)

    def input(self) -> Queue:
        """The durable input queue; commands reach it through the default exchange."""
        return _direct_queue(self.input_queue)

    def error(self) -> Queue:
        """The durable error queue: messages that failed for good, with failure headers."""
        return _direct_queue(self.error_queue)

    def declare(self, channel: Any) -> None:
        """Declare the input queue, the events exchange and the error queue on ``channel``."""
        self.events().declare(channel=channel)
        self.input().declare(channel=channel)
        self.error().declare(channel=channel)

    def subscriber_queue(self, name: str, routing_keys: Sequence[str]) -> Queue:
        """A durable queue bound to the events exchange once per routing key (``#`` allowed).

        Not declared here: pass it to ``Queue.declare(channel=...)`` or consume it.
        """
        if isinstance(routing_keys, str):
            raise TypeError("routing_keys must be a sequence of keys, not one string")
        if not routing_keys:
            raise ValueError("a subscriber queue needs at least one routing key")
        exchange = self.events()
        return Queue(
            name,
            bindings=[binding(exchange, routing_key=key) for key in routing_keys],
            durable=True,
            auto_delete=False,
        )


def _direct_queue(name: str) -> Queue:
    # No exchange: a queue is always bound to the default exchange by its own name,
    # which is where a Send (routing_key = queue name) lands.
    return Queue(name, durable=True, auto_delete=False)
