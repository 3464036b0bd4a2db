# mypy: allow-untyped-calls
"""KombuBus: moves already-encoded messages over RabbitMQ (py-amqp) or kombu's ``memory://``.

It implements the ``handlers.ports.Publisher`` port (``OutgoingMessage`` in,
confirmed on the broker) and hands incoming ``Delivery`` batches to a
callback. It knows nothing of handlers or the database. Publishing and consuming use
separate connections: one thread consumes, any thread may publish (under a lock).
On RabbitMQ a batch is published back-to-back and its confirms awaited together
(``confirms.py``).

Recoverability's moves live here too: ``send_to_retry`` (the same message back
on the input queue, at once or through a delay queue; in process on
``memory://``, ``delayed.py``) and ``send_to_error``; each acks the delivery
only once the broker confirmed the copy.

AMQP heartbeats (``heartbeat`` seconds, EMAILER_BROKER_HEARTBEAT) are on for
both connections on RabbitMQ: the consumer checks them as it waits for
messages, and a keepalive thread checks the publisher's between publishes, so
a silently dead connection is noticed within about two heartbeats.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from kombu.connection import Connection

from emailer import redaction
from emailer.adapters.bus.consuming import BatchConsumer
from emailer.adapters.bus.delayed import DelayedRedelivery
from emailer.adapters.bus.delivery import Delivery
from emailer.adapters.bus.error_copy import HEADER_BUDGET, error_copy_of, minimal_copy, resend_copy
from emailer.adapters.bus.errors import BusUnavailable
from emailer.adapters.bus.failure import failure_headers, merge_headers
from emailer.adapters.bus.publishing import CONFIRM_TIMEOUT, BatchPublisher, Route, connection_errors
from emailer.adapters.bus.topologies import NServiceBusRoutes
from emailer.adapters.bus.topology import Topology
from emailer.redaction import describe
from emailer.retries import BROKER_CONNECT
from handlers.ports import OutgoingMessage

_log = structlog.get_logger(__name__)

OnBatch = Callable[[list[Delivery]], None]
PING_TIMEOUT = 2.0


class KombuBus:
    """The bus adapter. ``connect()`` (or ``with``) before use; ``close()`` after.

    ``confirm_timeout``: how long the broker may take to confirm a published
    batch before ``publish`` gives up with ``BusUnavailable``. ``confirm=False``
    publishes without confirms (fire and forget: a nack goes unnoticed, an
    unroutable Send is only logged). ``nservicebus``: NServiceBus's routes
    declared and published to as well (``topologies.py``).
    """

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        confirm: bool = True,
        connect_timeout: float = 10.0,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        nservicebus: NServiceBusRoutes | None = None,
        heartbeat: float = 0.0,
    ) -> None:
        self.topology = topology
        self.nservicebus = nservicebus
        self._url = url
        self._connect_timeout = connect_timeout
        self._driver = Connection(url).transport.driver_type
        self._heartbeat = heartbeat if self._driver == "amqp" else 0.0
        self._keepalive_stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._delayed = DelayedRedelivery(self.publish)
        self._delay_queues: set[str] = set()
        self._publisher = self._new_connection()
        self._consumer = self._new_connection()
        self._publish_lock = threading.Lock()
        self._connected = False
        self.safe_url: str = url if self._driver == "memory" else self._publisher.as_uri()
        self._publishing = BatchPublisher(
            connection=self._publisher,
            events_exchange=topology.events_exchange,
            driver=self._driver,
            confirm=confirm,
            connect_timeout=connect_timeout,
            confirm_timeout=confirm_timeout,
            safe_url=self.safe_url,
            copies=self._nservicebus_copies,
        )

    def _nservicebus_copies(self, message: OutgoingMessage) -> list[tuple[Route, OutgoingMessage]]:
        if self.nservicebus is None:
            return []
        return [
            (Route(c.exchange, c.routing_key, False), c.message) for c in self.nservicebus.copies(message)
        ]

    # -- lifecycle ---------------------------------------------------------------

    def connect(self, max_retries: int = BROKER_CONNECT.attempts - 1) -> None:
        """Connect publisher and consumer, declare the topology; ``BusUnavailable`` if it can't."""
        for connection in (self._publisher, self._consumer):
            self._ensure_connected(connection, max_retries)
        with self._publish_lock:
            try:
                self.topology.declare(self._publisher.default_channel)
                if self.nservicebus is not None:
                    self.nservicebus.declare(self._publisher.default_channel)
                self._publishing.open()
            except connection_errors(self._publisher) as exc:
                raise BusUnavailable(self.safe_url, describe(exc)) from exc
            self._connected = True
        if self._heartbeat and self._keepalive is None:
            self._keepalive = threading.Thread(target=self._keep_alive, name="bus-heartbeat", daemon=True)
            self._keepalive.start()

    def declare_delay_queues(self) -> None:
        """Declare the delay queues of every configured delay (the worker does, at start)."""
        if self._driver != "amqp":
            return
        with self._publish_lock:
            for seconds in sorted(set(self.topology.delays)):
                self._declare_delay_queue(seconds)

    def close(self) -> None:
        """Close both connections. Stop ``consume`` (``should_stop``) before calling this."""
        self._keepalive_stop.set()
        if self._keepalive is not None:
            self._keepalive.join(2)
            self._keepalive = None
        self._delayed.close()
        with self._publish_lock:
            self._connected = False
            self._publishing.forget()
            self._publisher.release()
        self._consumer.release()

    def __enter__(self) -> KombuBus:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self, timeout: float = PING_TIMEOUT) -> bool:
        """Is the broker reachable right now? Answers within ``timeout`` seconds (for /readyz)."""
        result: list[bool] = []
        probe = threading.Thread(
            target=lambda: result.append(self._probe(timeout)), name="bus-ping", daemon=True
        )
        probe.start()
        probe.join(timeout)
        return bool(result and result[0])

    # -- publishing --------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish persistently; return only once the broker confirmed every message.

        Send goes to the default exchange (routing key = queue), Publish to the
        events exchange (routing key = message type). The batch is written
        back-to-back and the confirms are awaited together (``confirms.py``).

        * A Send is ``mandatory``: one the broker cannot route (no such queue)
          raises ``PublishFailed`` naming it, once the broker has answered for
          the whole batch, so every other message of the batch is then on the bus.
        * A broker nack raises ``PublishNotConfirmed`` (likewise after the whole
          batch was answered); a broker refusal (e.g. a missing exchange) raises
          ``PublishFailed`` at once and the rest of the batch is not sent.
        * A dropped connection is re-established under
          ``emailer.retries.publish_retrying`` and then the WHOLE batch is
          published again (the confirms still in flight on the old channel are
          lost with it), so messages already confirmed there reach the bus
          twice; beyond the policy, or when the broker does not answer within
          ``confirm_timeout``, ``BusUnavailable`` is raised.

        After any failure some messages of the batch may already be on the bus:
        retry the whole batch. That is safe because message ids are stable and
        receivers dedupe.
        """
        with self._publish_lock:
            self._publish_locked(messages)

    def send_to_error(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Move ``delivery`` to the error queue with NServiceBus failure headers, then ack it.

        The original body and content type are kept, and the headers as far as
        AMQP's limits allow (``error_copy.py``: nothing in a message can make
        this publish fail); the ack happens only after the error-queue publish
        is confirmed. ``extra_headers`` (e.g. retry counts) win. If the broker
        refuses the copy all the same, a minimal one (body, failure headers,
        message id) is tried; if that is refused too, or the broker is
        unreachable, this raises and the delivery is left unsettled.
        """
        failure = merge_headers(
            failure_headers(
                failed_queue=self.topology.input_queue,
                reason=reason,
                exc=exc,
                now=datetime.now(UTC),
            ),
            extra_headers,
        )
        with self._publish_lock:
            copy = error_copy_of(
                delivery, failure, self.topology.error_queue, self._publishing.header_budget(HEADER_BUDGET)
            )
            try:
                self._publish_locked([copy])
            except BusUnavailable:
                raise
            except Exception as refused:  # noqa: BLE001 - whatever it was, try the bare minimum
                _log.warning(
                    "bus.error_copy_refused_sending_minimal",
                    message_id=copy.message_id,
                    error=redaction.describe(refused),
                )
                self._publish_locked([minimal_copy(copy, delivery.message_id, failure)])
        delivery.ack()

    def send_to_retry(self, delivery: Delivery, headers: Mapping[str, str], delay: float) -> None:
        """Publish ``delivery`` again (``headers`` raised) for a retry, then ack it.

        ``delay`` 0: straight back to the input queue. Otherwise through the
        delay queue of that many seconds (RabbitMQ dead-letters it back to the
        input queue when its TTL ends), or, on ``memory://``, held in process
        until it is due. The body and headers are kept as they came, except the
        broker's own dead-lettering headers (``x-death``...). A failed publish
        raises and leaves the delivery unsettled; a crash after the confirm and
        before the ack leaves a duplicate, which the inbox absorbs.
        """
        in_process = delay > 0 and self._driver != "amqp"
        destination = self.topology.input_queue
        with self._publish_lock:
            if delay > 0 and not in_process:
                destination = self._declare_delay_queue(delay)
            copy = resend_copy(delivery, headers, destination)
            if not in_process:
                self._publish_locked([copy])
        if in_process:
            self._delayed.schedule(copy, delay)
        delivery.ack()

    def _declare_delay_queue(self, seconds: float) -> str:
        """The delay queue for ``seconds``, declared on first use; call under the publish lock."""
        name = self.topology.delay_queue_name(seconds)
        if name not in self._delay_queues:
            try:
                self.topology.delay_queue(seconds).declare(channel=self._publisher.default_channel)
            except connection_errors(self._publisher) as exc:
                self._publisher.collect()  # the default channel went with the connection
                raise BusUnavailable(self.safe_url, describe(exc)) from exc
            self._delay_queues.add(name)
        return name

    def _keep_alive(self) -> None:
        """Heartbeats on the publishing connection while nothing is published (RabbitMQ only)."""
        interval = max(0.2, self._heartbeat / 4)
        while not self._keepalive_stop.wait(interval):
            with self._publish_lock:
                if self._connected:
                    self._publishing.keep_alive()

    def _publish_locked(self, batch: Sequence[OutgoingMessage]) -> None:
        if not self._connected:
            raise RuntimeError("KombuBus is not connected: call connect() first")
        self._publishing.publish(batch)

    # -- consuming ---------------------------------------------------------------

    def consume(
        self,
        on_batch: OnBatch,
        *,
        prefetch: int = 50,
        max_batch: int = 50,
        should_stop: Callable[[], bool],
        idle_timeout: float = 0.2,
    ) -> None:
        """Consume the input queue in batches until ``should_stop()`` returns True.

        ``on_batch`` must ack or requeue every delivery, from this thread. If it
        raises, the unsettled deliveries are requeued and consuming goes on.
        Deliveries it leaves unsettled stay in flight (they count against
        ``prefetch``) and are requeued when consuming stops. A lost connection is
        re-established (with backoff) until ``should_stop``; what was in flight on
        it is redelivered by the broker.
        """
        if prefetch < 1 or max_batch < 1:
            raise ValueError("prefetch and max_batch must be at least 1")
        if not self._connected:
            raise RuntimeError("KombuBus is not connected: call connect() first")
        BatchConsumer(
            connection=self._consumer,
            queue=self.topology.input(),
            connect_timeout=self._connect_timeout,
            safe_url=self.safe_url,
        ).run(
            on_batch,
            prefetch=prefetch,
            max_batch=max_batch,
            should_stop=should_stop,
            idle_timeout=idle_timeout,
        )

    # -- connections -------------------------------------------------------------

    def _new_connection(self, *, timeout: float | None = None) -> Connection:
        # No ``confirm_publish`` transport option: py-amqp would then wait for each
        # confirm in turn. BatchPublisher selects confirm mode on its channel.
        options: dict[str, Any] = {}
        if self._driver == "memory":
            options["polling_interval"] = 0.005
        return Connection(
            self._url,
            connect_timeout=timeout or self._connect_timeout,
            transport_options=options,
            heartbeat=self._heartbeat,
        )

    def _ensure_connected(self, connection: Connection, max_retries: int) -> None:
        def retrying(exc: BaseException, interval: float) -> None:
            _log.warning("bus.connect_retry", url=self.safe_url, error=describe(exc), retry_in=interval)

        try:
            connection.ensure_connection(
                errback=retrying,
                max_retries=max_retries,
                # kombu grows the pause linearly: 0.5, 1.5, 2.5 ... up to max_wait.
                interval_start=BROKER_CONNECT.first_wait,
                interval_step=2 * BROKER_CONNECT.first_wait,
                interval_max=BROKER_CONNECT.max_wait,
            )
        except connection_errors(connection) as exc:
            raise BusUnavailable(self.safe_url, describe(exc)) from exc

    def _probe(self, timeout: float) -> bool:
        connection = self._new_connection(timeout=timeout)
        try:
            connection.ensure_connection(max_retries=0, timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False
        finally:
            connection.release()
