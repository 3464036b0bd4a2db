# mypy: allow-untyped-calls
"""KombuBus: moves already-encoded messages over RabbitMQ (py-amqp) or kombu's ``memory://``.

It knows nothing of handlers or the database. Publishing and consuming use
separate connections: one thread consumes, any thread may publish (under a lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from amqp.exceptions import MessageNacked
from kombu.connection import Connection
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.messaging import Producer

from emailer.bus.consuming import BatchConsumer
from emailer.bus.envelope import CORRELATION_ID_HEADER, Delivery, Envelope
from emailer.bus.errors import BusUnavailable, PublishFailed, PublishNotConfirmed
from emailer.bus.failure import failure_headers, merge_headers
from emailer.bus.topology import Topology

_log = structlog.get_logger(__name__)

OnBatch = Callable[[list[Delivery]], None]
PERSISTENT = 2
PING_TIMEOUT = 2.0
# Bounded: a publish that cannot get through within a few seconds raises to the caller.
PUBLISH_RETRY_POLICY: Mapping[str, float] = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.5,
    "interval_max": 2.0,
}


class KombuBus:
    """The bus adapter. ``connect()`` (or ``with``) before use; ``close()`` after."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        confirm: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.topology = topology
        self._url = url
        self._confirm = confirm
        self._connect_timeout = connect_timeout
        self._driver = Connection(url).transport.driver_type
        self._publisher = self._new_connection(publishing=True)
        self._consumer = self._new_connection(publishing=False)
        self._publish_lock = threading.Lock()
        self._producer: Producer | None = None
        self._returned: list[str] = []  # basic.return seen for the publish in progress
        self.safe_url: str = url if self._driver == "memory" else self._publisher.as_uri()

    # -- lifecycle ---------------------------------------------------------------

    def connect(self, max_retries: int = 3) -> None:
        """Connect publisher and consumer, declare the topology; ``BusUnavailable`` if it can't."""
        for connection in (self._publisher, self._consumer):
            self._ensure_connected(connection, max_retries)
        with self._publish_lock:
            try:
                self.topology.declare(self._publisher.default_channel)
            except self._connection_errors(self._publisher) as exc:
                raise BusUnavailable(self.safe_url, _describe(exc)) from exc
            self._producer = Producer(self._publisher, on_return=self._on_return)

    def close(self) -> None:
        """Close both connections. Stop ``consume`` (``should_stop``) before calling this."""
        with self._publish_lock:
            self._producer = None
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

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish persistently; return only once the broker confirmed every envelope.

        Send goes to the default exchange (routing key = queue), Publish to the
        events exchange (routing key = message type). A Send is ``mandatory``: one
        the broker cannot route (no such queue) raises ``PublishFailed`` instead of
        vanishing (RabbitMQ returns it before confirming). A dropped connection is
        re-established within ``PUBLISH_RETRY_POLICY``; beyond it ``BusUnavailable``
        is raised, a broker nack raises ``PublishNotConfirmed``. After a failure some
        envelopes of the batch may already be on the bus: retry the whole batch
        (message ids are stable, receivers dedupe).

        Seam for batching confirms: py-amqp's confirm mode waits for each
        basic.ack before the next publish. Taking a batch lets a later version
        publish them all and then wait for the confirms in flight, without changing
        this contract.
        """
        with self._publish_lock:
            for envelope in envelopes:
                exchange = "" if envelope.intent == "Send" else self.topology.events_exchange
                properties: dict[str, Any] = {
                    "message_id": envelope.message_id,
                    "type": envelope.message_type,
                }
                correlation_id = envelope.headers.get(CORRELATION_ID_HEADER)
                if correlation_id:
                    properties["correlation_id"] = correlation_id
                self._publish_locked(
                    envelope.body,
                    exchange=exchange,
                    routing_key=envelope.destination,
                    headers=dict(envelope.headers),
                    content_type="application/json",
                    content_encoding="utf-8",
                    properties=properties,
                    mandatory=envelope.intent == "Send",
                )

    def send_to_error(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Move ``delivery`` to the error queue with NServiceBus failure headers, then ack it.

        The original body and headers are kept; the ack happens only after the
        error-queue publish is confirmed. ``extra_headers`` (e.g. retry counts) win.
        """
        message: Message | None = delivery._message
        original_headers = dict(message.headers) if message is not None else delivery.headers
        original_props: Mapping[str, Any] = message.properties if message is not None else {}
        failure = failure_headers(
            failed_queue=self.topology.input_queue,
            reason=reason,
            exc=exc,
            now=datetime.now(UTC),
        )
        properties: dict[str, Any] = {
            "message_id": original_props.get("message_id") or delivery.message_id,
        }
        for name in ("type", "correlation_id"):
            if original_props.get(name):
                properties[name] = original_props[name]
        with self._publish_lock:
            self._publish_locked(
                delivery.body,
                exchange="",
                routing_key=self.topology.error_queue,
                headers=merge_headers(original_headers, failure, extra_headers),
                content_type=(message.content_type if message else None) or "application/octet-stream",
                content_encoding=(message.content_encoding if message else None) or "binary",
                properties=properties,
                mandatory=True,
            )
        delivery.ack()

    def _publish_locked(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        content_type: str,
        content_encoding: str,
        properties: dict[str, Any],
        mandatory: bool,
    ) -> None:
        if self._producer is None:
            raise RuntimeError("KombuBus is not connected: call connect() first")
        self._returned.clear()
        try:
            self._producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                delivery_mode=PERSISTENT,
                mandatory=mandatory,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=headers,
                timestamp=int(time.time()),  # AMQP timestamp: whole seconds since the epoch
                retry=True,
                retry_policy=dict(PUBLISH_RETRY_POLICY),
                **properties,
            )
        except MessageNacked as exc:
            raise PublishNotConfirmed(
                f"broker nacked {properties.get('message_id')} to {exchange or '(default)'}/{routing_key}"
            ) from exc
        except self._connection_errors(self._publisher) as exc:
            raise BusUnavailable(self.safe_url, _describe(exc)) from exc
        except self._publisher.channel_errors as exc:
            raise PublishFailed(
                f"publish to {exchange or '(default)'}/{routing_key} refused: {_describe(exc)}"
            ) from exc
        if self._returned:
            raise PublishFailed(
                f"{properties.get('message_id')} to {exchange or '(default)'}/{routing_key} "
                f"was returned unroutable: {self._returned[0]}"
            )

    def _on_return(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        # py-amqp calls this while waiting for the confirm, in the publishing thread.
        self._returned.append(str(exc))

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
        if self._producer is None:
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

    def _new_connection(self, *, publishing: bool, timeout: float | None = None) -> Connection:
        options: dict[str, Any] = {}
        if self._driver == "memory":
            options["polling_interval"] = 0.005
        elif self._driver == "amqp" and publishing and self._confirm:
            options["confirm_publish"] = True
        return Connection(
            self._url,
            connect_timeout=timeout or self._connect_timeout,
            transport_options=options,
        )

    def _ensure_connected(self, connection: Connection, max_retries: int) -> None:
        def retrying(exc: BaseException, interval: float) -> None:
            _log.warning("bus.connect_retry", url=self.safe_url, error=_describe(exc), retry_in=interval)

        try:
            connection.ensure_connection(
                errback=retrying,
                max_retries=max_retries,
                interval_start=0.5,
                interval_step=1.0,
                interval_max=4.0,
            )
        except self._connection_errors(connection) as exc:
            raise BusUnavailable(self.safe_url, _describe(exc)) from exc

    def _probe(self, timeout: float) -> bool:
        connection = self._new_connection(publishing=False, timeout=timeout)
        try:
            connection.ensure_connection(max_retries=0, timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False
        finally:
            connection.release()

    @staticmethod
    def _connection_errors(connection: Connection) -> tuple[type[BaseException], ...]:
        return (
            OperationalError,
            OSError,
            *connection.connection_errors,
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
