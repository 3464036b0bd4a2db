# mypy: allow-untyped-calls
"""``Subscription``: a durable queue bound to chosen events, handled one by one, deduped by message id.

A message is acked only after its handler returned; an exception requeues it
(the broker delivers it again, to this or another subscriber on the queue).
Events carry stable message ids, so one already handled (a redelivery after a
crash between the handler's return and the ack, or a republish) is acked
without calling the handler again. A body that is not a valid event is
rejected without requeue (it would fail forever); give the queue a
dead-letter exchange to keep such messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue, binding
from kombu.messaging import Consumer

from contracts.events import EmailEvent
from emailer_client import wire
from emailer_client.dedupe import DedupeStore, MemoryDedupeStore

Handlers = Mapping[type[Any], Callable[[Any], object]]
_log = logging.getLogger(__name__)


class Subscription:
    def __init__(
        self,
        bus_url: str,
        events_exchange: str,
        queue_name: str,
        handlers: Handlers,
        *,
        store: DedupeStore | None = None,
        prefetch: int = 10,
    ) -> None:
        self._types = wire.event_types(list(handlers))
        self._handlers: dict[type[EmailEvent], Callable[[Any], object]] = {
            cls: handlers[cls] for cls in self._types
        }
        self.store = store if store is not None else MemoryDedupeStore()
        self._stop = threading.Event()
        self._connection = Connection(bus_url)
        channel = self._connection.channel()
        exchange = wire.events_exchange(events_exchange)
        exchange(channel).declare()
        self.queue = Queue(
            queue_name,
            bindings=[binding(exchange, routing_key=cls.type_name()) for cls in self._types],
            durable=True,
            auto_delete=False,
        )
        self._consumer = Consumer(channel, [self.queue], on_message=self._on_message, no_ack=False)
        self._consumer.declare()
        self._consumer.qos(prefetch_count=prefetch)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, *, idle_timeout: float = 0.2) -> None:
        """Handle events until ``stop()`` (from another thread or a handler)."""
        self._consumer.consume()
        try:
            while not self._stop.is_set():
                try:
                    self._connection.drain_events(timeout=idle_timeout)
                except TimeoutError:
                    continue
        finally:
            self._consumer.cancel()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._connection.release()  # what was delivered and not acked goes back to the queue

    def _on_message(self, message: Any) -> None:
        try:
            decoded = wire.decode(message.headers or {}, message.properties, message.body, self._types)
        except ValueError:
            _log.exception("emailer_client.invalid_event")
            message.reject(requeue=False)
            return
        if decoded is None:  # bound by someone else to a type we do not handle
            message.ack()
            return
        message_id, event = decoded
        if message_id and self.store.seen(message_id):
            message.ack()
            return
        try:
            self._handlers[type(event)](event)
        except Exception:
            _log.exception("emailer_client.handler_failed", extra={"message_id": message_id})
            message.reject(requeue=True)
            return
        if message_id:
            self.store.remember(message_id)
        message.ack()
