# mypy: allow-untyped-calls
"""The RabbitMQ topology the emailer endpoint owns: input queue, events exchange, error queue, delay queues.

Delayed retries wait in delay queues, one per delay (``<input>.delay.10s``):
each holds its messages for its TTL (``x-message-ttl``), then dead-letters them
through the default exchange back to the input queue. One queue per delay, so
every message in a queue has the same TTL and a long delay never holds up a
short one (RabbitMQ expires messages from the head of a queue only).

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
    delays: tuple[float, ...] = (10.0, 20.0, 30.0)
    """Seconds of each delayed retry; one delay queue per distinct value."""

    def events(self) -> Exchange:
        """The durable topic exchange events are published to (routing key = type name)."""
        return Exchange(self.events_exchange, type="topic", durable=True, auto_delete=False)

    def input(self) -> Queue:
        """The durable input queue; commands reach it through the default exchange."""
        return _direct_queue(self.input_queue)

    def error(self) -> Queue:
        """The durable error queue: messages that failed for good, with failure headers."""
        return _direct_queue(self.error_queue)

    def delay_queue_name(self, seconds: float) -> str:
        return f"{self.input_queue}.delay.{delay_label(seconds)}"

    def delay_queue(self, seconds: float) -> Queue:
        """A durable queue holding messages ``seconds``, then dead-lettering them to the input queue."""
        return Queue(
            self.delay_queue_name(seconds),
            durable=True,
            auto_delete=False,
            queue_arguments={
                "x-message-ttl": delay_ms(seconds),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.input_queue,
            },
        )

    def delay_queues(self) -> list[Queue]:
        return [self.delay_queue(seconds) for seconds in sorted(set(self.delays))]

    def declare(self, channel: Any) -> None:
        """Declare the input queue, the events exchange and the error queue on ``channel``.

        The delay queues are the worker's (``KombuBus.declare_delay_queues``): a
        gateway or ingress never retries a message, so it declares none.
        """
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


def delay_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def delay_label(seconds: float) -> str:
    """``10s`` for whole seconds, else ``200ms``: part of a delay queue's name."""
    ms = delay_ms(seconds)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
