# mypy: allow-untyped-calls
"""The batch consumer loop behind ``KombuBus.consume``: collect, hand over, survive reconnects.

Modelled on ``kombu.mixins.ConsumerMixin``: raw messages only (``on_message``,
so kombu never decodes a body nor acks one it cannot decode), explicit acks,
and a fresh channel after every connection or channel failure.

Reconnecting goes through ``emailer.retries.broker_reconnect_retrying``
(tenacity) rather than kombu's ``ensure_connection`` retry loop: that loop only
covers opening the connection (a channel that fails as consuming starts would
spin), backs off linearly without jitter (N workers hammer a restarted broker
together) and can only be interrupted by raising from a callback it calls once
a second. Each attempt still opens the connection with kombu's
``ensure_connection`` (one try), and the backoff starts over once a session
was consuming.

When ``on_batch`` raises ``InfrastructureUnavailable`` (the database, or
another dependency, is down), consuming pauses: the deliveries it left
unsettled are kept (neither acked nor requeued, so no other worker counts them
as abandoned and no retry is spent), the consumer waits under
``emailer.retries.dependency_pause`` (exponential, jittered, at most a few
seconds), still reading the connection and answering heartbeats, and hands the
same deliveries over again until the dependency answers. Heartbeats are
checked every time the loop waits for messages.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.messaging import Consumer

from emailer import redaction
from emailer.adapters.bus.delivery import Delivery
from emailer.adapters.bus.reads import buffered_reads
from emailer.infrastructure import InfrastructureUnavailable
from emailer.retries import broker_reconnect_retrying, dependency_pause

_log = structlog.get_logger(__name__)

OnBatch = Callable[[list[Delivery]], None]


class _SessionLost(Exception):
    """A session that was consuming lost its connection: reconnect, the backoff starts over."""


class BatchConsumer:
    """Consumes one queue on its own connection, from the thread that calls ``run``."""

    def __init__(
        self, *, connection: Connection, queue: Queue, connect_timeout: float, safe_url: str
    ) -> None:
        self._connection = connection
        self._queue = queue
        self._connect_timeout = connect_timeout
        self._safe_url = safe_url
        self._lost = (
            OperationalError,
            OSError,
            *connection.connection_errors,
            *connection.channel_errors,
        )

    def run(
        self,
        on_batch: OnBatch,
        *,
        prefetch: int,
        max_batch: int,
        should_stop: Callable[[], bool],
        idle_timeout: float,
    ) -> None:
        while not should_stop():
            reconnecting = broker_reconnect_retrying(
                self._lost,
                should_stop=should_stop,
                sleep=lambda seconds: _pause(seconds, should_stop),
                on_retry=lambda _exc: self._connection.collect(),
            )
            try:
                for attempt in reconnecting:
                    with attempt:
                        self._session(on_batch, prefetch, max_batch, should_stop, idle_timeout)
            except _SessionLost as lost:
                self._dropped(lost.__cause__ or lost)
            except self._lost:
                if not should_stop():  # pragma: no cover - the policy has no attempt limit
                    raise

    def _dropped(self, exc: BaseException) -> None:
        """Drop the broken connection without talking to it; what it held unacked is redelivered."""
        _log.warning("bus.consumer.connection_lost", url=self._safe_url, error=redaction.describe(exc))
        self._connection.collect()  # then reconnect at once; the backoff is for failed reconnects

    def _session(
        self,
        on_batch: OnBatch,
        prefetch: int,
        max_batch: int,
        should_stop: Callable[[], bool],
        idle_timeout: float,
    ) -> None:
        """One channel's life: returns when asked to stop, raises when the connection is lost."""
        connection = self._connection
        connection.ensure_connection(max_retries=0, timeout=self._connect_timeout)
        buffered_reads(getattr(connection.connection, "transport", None))  # a delivery: 1-2 recv, not 9
        channel = connection.channel()
        if hasattr(channel, "auto_decode"):
            channel.auto_decode = False  # py-amqp would turn utf-8 bodies into str
        received: list[Message] = []  # arrived, not handed to on_batch yet
        in_flight: list[Message] = []  # handed to on_batch, maybe not settled yet
        consumer = Consumer(
            channel,
            queues=[self._queue],
            no_ack=False,
            on_message=received.append,
            # Only a broken compression header gets here; deliver it raw all the same.
            on_decode_error=lambda message, _exc: received.append(message),
        )
        consumer.qos(prefetch_count=prefetch)
        consumer.consume()
        try:
            while not should_stop():
                connection.heartbeat_check()
                _collect(connection, received, max_batch, idle_timeout)
                if not received:
                    continue
                batch, received[:] = received[:max_batch], received[max_batch:]
                in_flight.extend(batch)
                self._hand_over(on_batch, batch, should_stop, idle_timeout)
                in_flight[:] = [message for message in in_flight if not message.acknowledged]
                if in_flight:
                    _log.warning("bus.consumer.unsettled", count=len(in_flight))
        except self._lost as exc:
            raise _SessionLost() from exc
        except BaseException:
            _give_back(in_flight + received)
            _close_quietly(consumer, channel)
            raise
        _give_back(in_flight + received)
        _close_quietly(consumer, channel)

    def _hand_over(
        self,
        on_batch: OnBatch,
        batch: list[Message],
        should_stop: Callable[[], bool],
        idle_timeout: float,
    ) -> None:
        deliveries = [_to_delivery(message) for message in batch]
        try:
            self._until_dependencies_answer(on_batch, deliveries, should_stop)
        except Exception as exc:
            # Whatever on_batch raised (an OSError from a handler is no sign of a lost
            # broker connection), give the unsettled back. If the connection is really
            # gone, the requeue raises and the caller reconnects.
            unsettled = [delivery for delivery in deliveries if not delivery.settled]
            _log.error(
                "bus.consumer.batch_failed",
                size=len(deliveries),
                requeued=[delivery.message_id for delivery in unsettled],
                error=redaction.describe(exc),
                stack=redaction.format_traceback(exc),
            )
            for delivery in unsettled:
                delivery.requeue()
            # A batch that fails at once again would otherwise spin hot.
            _pause(idle_timeout, should_stop)

    def _until_dependencies_answer(
        self, on_batch: OnBatch, deliveries: list[Delivery], should_stop: Callable[[], bool]
    ) -> None:
        """``on_batch``; on ``InfrastructureUnavailable``, pause and hand over what is unsettled, again."""
        pending, pauses, started = deliveries, 0, time.monotonic()
        while True:
            try:
                on_batch(pending)
            except InfrastructureUnavailable as outage:
                pending = [delivery for delivery in pending if not delivery.settled]
                if not pending:
                    return
                pauses += 1
                wait = dependency_pause(pauses)
                if pauses == 1 or pauses % 10 == 0:
                    _log.warning(
                        "bus.consumer.paused",
                        dependency=outage.dependency,
                        held=len(pending),
                        pauses=pauses,
                        retry_in=round(wait, 2),
                        error=str(outage),
                    )
                self._wait_alive(wait, should_stop)
                if should_stop():
                    return  # what is unsettled is given back as the session ends
                continue
            if pauses:
                _log.info(
                    "bus.consumer.resumed", pauses=pauses, paused_for=round(time.monotonic() - started, 2)
                )
            return

    def _wait_alive(self, seconds: float, should_stop: Callable[[], bool]) -> None:
        """Pause for ``seconds`` without going silent: read the connection, send heartbeats.

        Messages that arrive meanwhile wait in the consumer (up to the prefetch
        window); a lost connection raises, and the broker redelivers what was held.
        """
        deadline = time.monotonic() + seconds
        while not should_stop() and (remaining := deadline - time.monotonic()) > 0:
            self._connection.heartbeat_check()
            with contextlib.suppress(TimeoutError):
                self._connection.drain_events(timeout=min(0.2, remaining))


def _collect(connection: Connection, received: list[Message], max_batch: int, idle_timeout: float) -> None:
    """Wait up to ``idle_timeout`` for a first message, then take what is already there."""
    if not received:
        try:
            connection.drain_events(timeout=idle_timeout)
        except TimeoutError:
            return
    while len(received) < max_batch:
        try:
            connection.drain_events(timeout=0)
        except TimeoutError:
            return


def _to_delivery(message: Message) -> Delivery:
    body: Any = message.body
    if isinstance(body, str):  # py-amqp's empty body (''), or a transport that decoded it after all
        body = _encoded(body, message.content_encoding)
    return Delivery.from_transport(
        headers=message.headers,
        properties=message.properties,
        body=bytes(body or b""),
        redelivered=_redelivered(message),
        message=message,
    )


def _encoded(body: str, encoding: str | None) -> bytes:
    if not body:
        return b""  # kombu's "binary" (its content encoding for bytes bodies) is no codec
    try:
        return body.encode(encoding or "utf-8")
    except LookupError:
        return body.encode("utf-8", "surrogatepass")


def _redelivered(message: Message) -> bool:
    if message.delivery_info.get("redelivered"):
        return True
    # kombu's virtual transports (memory://) flag a requeued message on the raw
    # payload only, not in delivery_info.
    raw = getattr(message, "_raw", None)
    return isinstance(raw, dict) and bool(raw.get("redelivered"))


def _give_back(messages: list[Message]) -> None:
    """Requeue what is still unsettled: memory:// would drop it when the channel closes."""
    for message in messages:
        if not message.acknowledged:
            try:
                message.reject(requeue=True)
            except Exception as exc:  # noqa: BLE001 - the broker redelivers on channel close anyway
                _log.warning("bus.consumer.requeue_failed", error=redaction.describe(exc))


def _close_quietly(consumer: Consumer, channel: Any) -> None:
    for close in (consumer.cancel, channel.close):
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - closing a channel that is going away anyway
            _log.debug("bus.consumer.close_failed", error=redaction.describe(exc))


def _pause(seconds: float, should_stop: Callable[[], bool]) -> None:
    """Sleep up to ``seconds``, waking early (every 50 ms) when asked to stop."""
    stop = threading.Event()
    remaining = seconds
    while remaining > 0 and not should_stop():
        step = min(0.05, remaining)
        stop.wait(step)
        remaining -= step
