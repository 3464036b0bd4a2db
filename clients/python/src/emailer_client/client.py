# mypy: allow-untyped-calls
"""``Emailer``: send a command with publisher confirm; wait for the event correlated with it.

Waiting never misses an event: ``expect`` binds a short-lived exclusive queue
to the events exchange BEFORE the command is sent, so an event published at
any moment after the send is already routed to it (``send_and_wait`` does
both in that order). ``wait_for`` on its own binds when called: use it only
for events that cannot have been published yet.
"""

from __future__ import annotations

import threading
import time
import uuid
from types import TracebackType
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue, binding
from kombu.messaging import Consumer, Producer

from contracts.base import Command
from contracts.events import EmailEvent
from emailer_client import wire
from emailer_client.dedupe import DedupeStore
from emailer_client.subscription import Handlers, Subscription


class WaitTimeout(TimeoutError):
    """No matching event arrived in time."""


class Emailer:
    """A connection to Emailer's bus. Thread-safe: sends share one confirmed channel under a lock.

    ``endpoint``: Emailer's input queue; ``events_exchange``: where it publishes;
    ``sender``: this service's endpoint name (``OriginatingEndpoint``).
    """

    def __init__(
        self,
        bus_url: str,
        *,
        endpoint: str = "emailer",
        events_exchange: str = "emailer.events",
        sender: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.bus_url = bus_url
        self.endpoint = endpoint
        self.events_exchange = events_exchange
        self.sender = sender or "emailer-client"
        self._connect_timeout = connect_timeout
        # confirm_publish: publish returns only once the broker confirmed (and raises on a nack).
        self._connection = Connection(
            bus_url, connect_timeout=connect_timeout, transport_options={"confirm_publish": True}
        )
        self._lock = threading.Lock()

    def __enter__(self) -> Emailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._connection.release()

    # -- commands ----------------------------------------------------------------

    def send(
        self,
        command: Command,
        *,
        correlation_id: str | None = None,
        conversation_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send ``command`` to Emailer's queue; return its message id once the broker confirmed it.

        ``correlation_id`` defaults to the message id and ``conversation_id`` to a
        new one; every event about the email carries both back.
        """
        message_id = message_id or str(uuid.uuid4())
        headers = wire.command_headers(
            command,
            message_id=message_id,
            correlation_id=correlation_id,
            conversation_id=conversation_id,
            sender=self.sender,
        )
        with self._lock:
            producer = Producer(self._connection.default_channel)
            publish = self._connection.ensure(producer, producer.publish, max_retries=3)
            publish(
                wire.body(command),
                exchange="",
                routing_key=self.endpoint,
                mandatory=True,
                delivery_mode=wire.PERSISTENT,
                content_type="application/json",
                content_encoding="utf-8",
                message_id=message_id,
                correlation_id=headers["NServiceBus.CorrelationId"],
                type=command.type_name(),
                headers=headers,
            )
        return message_id

    # -- waiting -----------------------------------------------------------------

    def expect(self, email_id: str, wanted: Any) -> Expectation:
        """Bind a queue for ``wanted`` events of ``email_id`` now; ``wait`` on it after sending."""
        return Expectation(self, email_id, wire.event_types(wanted))

    def send_and_wait(
        self, command: Command, wanted: Any, *, timeout: float = 60.0, **send: Any
    ) -> EmailEvent:
        """Send ``command`` (it must have an ``email_id``) and return the first ``wanted`` event about it."""
        email_id = str(getattr(command, "email_id"))  # noqa: B009 - every public command has one
        with self.expect(email_id, wanted) as expectation:
            self.send(command, **send)
            return expectation.wait(timeout)

    def wait_for(self, email_id: str, wanted: Any, *, timeout: float = 60.0) -> EmailEvent:
        """The next ``wanted`` event of ``email_id`` published from now on (see ``expect`` for safety)."""
        with self.expect(email_id, wanted) as expectation:
            return expectation.wait(timeout)

    # -- subscribing -------------------------------------------------------------

    def subscribe(
        self, queue_name: str, handlers: Handlers, *, store: DedupeStore | None = None, prefetch: int = 10
    ) -> Subscription:
        """A durable queue bound to the events in ``handlers``; ``run()`` the returned subscription."""
        return Subscription(
            self.bus_url, self.events_exchange, queue_name, handlers, store=store, prefetch=prefetch
        )


class Expectation:
    """A short-lived exclusive queue bound to some event types, filtered on one email id."""

    def __init__(self, emailer: Emailer, email_id: str, wanted: tuple[type[EmailEvent], ...]) -> None:
        self.email_id = email_id
        self._wanted = wanted
        self._found: list[EmailEvent] = []
        self._connection = Connection(emailer.bus_url, connect_timeout=emailer._connect_timeout)
        try:
            channel = self._connection.channel()
            exchange = wire.events_exchange(emailer.events_exchange)
            exchange(channel).declare()
            queue = Queue(
                f"emailer-client.wait.{uuid.uuid4()}",
                bindings=[binding(exchange, routing_key=cls.type_name()) for cls in wanted],
                exclusive=True,
                auto_delete=True,
                durable=False,
            )
            self._consumer = Consumer(channel, [queue], on_message=self._on_message, no_ack=True)
            self._consumer.declare()  # queue and bindings exist from here on: nothing is missed
            self._consumer.consume()
        except BaseException:
            self._connection.release()
            raise

    def __enter__(self) -> Expectation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._connection.release()  # the exclusive queue goes with its connection

    def wait(self, timeout: float = 60.0) -> EmailEvent:
        """The first wanted event of the email; ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._found:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = " | ".join(cls.type_name() for cls in self._wanted)
                raise WaitTimeout(f"no {names} for email {self.email_id!r} within {timeout}s")
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        return self._found[0]

    def _on_message(self, message: Any) -> None:
        decoded = wire.decode(message.headers or {}, message.properties, message.body, self._wanted)
        if decoded is not None and getattr(decoded[1], "email_id", None) == self.email_id:
            self._found.append(decoded[1])
