# mypy: allow-untyped-calls
"""The publisher behind ``KombuBus.publish``: a batch of ``OutgoingMessage`` out, confirmed, reconnecting.

A batch is written back-to-back on one channel; on RabbitMQ (confirm mode) the
confirms are then awaited together (``confirms.py``), instead of py-amqp's
``confirm_publish`` waiting for each message before sending the next. A lost
connection is re-established under ``emailer.retries.publish_retrying`` and the
whole batch is published again on the new channel: the confirms that were in
flight on the old one are lost with it, and message ids are stable, so a
message that reaches the bus twice is deduped by its receivers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from amqp.exceptions import RecoverableConnectionError
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from contracts.wire import H
from emailer.adapters.bus.coalesce import FLUSH_BYTES, one_write
from emailer.adapters.bus.confirms import ConfirmTimeout, ConfirmTracker, take_in
from emailer.adapters.bus.error_copy import FALLBACK_CONTENT_TYPE, short, short_or
from emailer.adapters.bus.errors import BusUnavailable, PublishFailed
from emailer.adapters.bus.frames import publish_frames
from emailer.adapters.bus.reads import buffered_reads
from emailer.redaction import describe
from emailer.retries import publish_retrying
from handlers.ports import OutgoingMessage

_log = structlog.get_logger(__name__)

PERSISTENT = 2
CONFIRM_TIMEOUT = 30.0  # seconds the broker may take to confirm a whole batch
_TEXT_TYPES = ("application/json", "text/")


def connection_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """What a lost (or unreachable) broker connection raises."""
    return (OperationalError, OSError, *connection.connection_errors)


@dataclass(frozen=True)
class Route:
    """Where a message goes on AMQP: a Send to a queue (default exchange), a Publish to the events."""

    exchange: str
    routing_key: str
    mandatory: bool

    def label(self, message: OutgoingMessage) -> str:
        return f"{message.message_id} to {self.exchange or '(default)'}/{self.routing_key}"


def route(message: OutgoingMessage, events_exchange: str) -> Route:
    """A Send is ``mandatory`` (an unroutable one is an error); a Publish with no subscriber is not."""
    if message.intent == "Send":
        return Route("", message.destination, mandatory=True)
    return Route(events_exchange, message.destination, mandatory=False)


Copies = Callable[[OutgoingMessage], "Sequence[tuple[Route, OutgoingMessage]]"]
"""More publications of a message besides its own route (``topologies.py``: NServiceBus's routes)."""


def no_copies(message: OutgoingMessage) -> Sequence[tuple[Route, OutgoingMessage]]:
    return ()


def amqp_properties(message: OutgoingMessage, timestamp: int) -> dict[str, Any]:
    """The AMQP properties of ``message``: its id, type and correlation id, persistent, stamped.

    Ids are AMQP short strings (255 bytes): one that does not fit is given as
    ``sha256:<hex>`` of it (its header keeps it whole), never a failed publish.
    """
    properties: dict[str, Any] = {
        "message_id": short(message.message_id),
        "delivery_mode": PERSISTENT,
        "timestamp": timestamp,  # AMQP: whole seconds
    }
    if message.message_type:
        properties["type"] = short(message.message_type)
    correlation_id = message.headers.get(H.CORRELATION_ID)
    if correlation_id:
        properties["correlation_id"] = short(correlation_id)
    return properties


def content_encoding(content_type: str) -> str:
    return "utf-8" if content_type.startswith(_TEXT_TYPES) else "binary"


class BatchPublisher:
    """Publishes on its own connection and channel. Not thread-safe: the caller serialises."""

    def __init__(
        self,
        *,
        connection: Connection,
        events_exchange: str,
        driver: str,
        confirm: bool,
        connect_timeout: float,
        confirm_timeout: float,
        safe_url: str,
        copies: Copies = no_copies,
    ) -> None:
        self._connection = connection
        self._events_exchange = events_exchange
        self._copies = copies
        self._amqp = driver == "amqp"
        # No confirms on kombu's virtual transports (memory://): a publish there is done.
        self._confirm = confirm and self._amqp
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._safe_url = safe_url
        self._connection_errors = connection_errors(connection)
        # Opened on first use and again after every loss (kombu's default channel
        # is left to topology declarations).
        self._channel: Any = None
        self._confirms: ConfirmTracker | None = None

    def open(self) -> None:
        """Open the publishing channel now (connection errors propagate)."""
        self._publishing_channel()

    def header_budget(self, default: int) -> int:
        """Bytes a message's header table may take here: ``default``, less if the frame is smaller."""
        # The negotiated frame size, from the open channel (asking kombu's connection would connect).
        amqp_connection = getattr(self._channel, "connection", None) if self._amqp else None
        frame_max = getattr(amqp_connection, "frame_max", None)
        if isinstance(frame_max, int) and frame_max > 0:
            return max(1024, min(default, frame_max - 8 - 2048))  # room for the other properties
        return default

    def forget(self) -> None:
        """Drop the channel state; the caller closes the connection."""
        self._detach()
        self._channel = None

    def publish(self, batch: Sequence[OutgoingMessage]) -> None:
        """Publish ``batch``; in confirm mode return once every message of it was confirmed.

        A lost connection is retried (reconnect, the whole batch again) under
        ``publish_retrying``; beyond it, or when the broker does not confirm in
        time, ``BusUnavailable``. A broker refusal raises ``PublishFailed`` at once.
        """
        if not batch:
            return
        timestamp = int(time.time())  # fixed once, so that a republish sends the same
        try:
            for attempt in publish_retrying(self._connection_errors):
                with attempt:
                    self._attempt(batch, timestamp)
        except ConfirmTimeout as exc:  # connected, yet the broker does not answer (blocked?)
            raise BusUnavailable(self._safe_url, str(exc)) from exc
        except self._connection_errors as exc:
            raise BusUnavailable(self._safe_url, describe(exc)) from exc

    def keep_alive(self) -> None:
        """Between publishes: read what the broker sent (its heartbeats), send ours when due.

        A connection found dead is dropped; the next publish opens a new one.
        """
        if self._channel is None:
            return
        try:
            take_in(self._connection)
            self._connection.heartbeat_check()
        except self._connection_errors as exc:
            _log.warning("bus.publisher.connection_lost", url=self._safe_url, error=describe(exc))
            self._drop_connection()

    def _attempt(self, batch: Sequence[OutgoingMessage], timestamp: int) -> None:
        """One try; leaves the channel state ready for the next (a lost connection is dropped)."""
        try:
            self._publish_once(batch, timestamp)
        except ConfirmTimeout:
            self._drop_connection()
            raise
        except self._connection.channel_errors as exc:
            self._drop_channel()
            label = route(batch[0], self._events_exchange).label(batch[0])
            raise PublishFailed(f"publish of {label} etc. refused: {describe(exc)}") from exc
        except self._connection_errors:
            self._drop_connection()
            raise

    def _publish_once(self, batch: Sequence[OutgoingMessage], timestamp: int) -> None:
        """Write the batch (one socket write: ``coalesce.py``); in confirm mode await every confirm."""
        channel = self._publishing_channel()
        confirms = self._confirms
        if confirms is not None:
            confirms.poll()  # once a batch: ``confirms.publish`` does not read (py-amqp's did, per message)
        with one_write(channel):
            if self._amqp:
                self._write_frames(channel, confirms, batch, timestamp)
            else:
                for first in batch:
                    for where, item in ((route(first, self._events_exchange), first), *self._copies(first)):
                        self._write(channel, confirms, where, item, timestamp)
        if confirms is not None:
            confirms.wait(self._confirm_timeout)

    def _write_frames(
        self, channel: Any, confirms: ConfirmTracker | None, batch: Sequence[OutgoingMessage], timestamp: int
    ) -> None:
        """On py-amqp: every message's frames built here (``frames.py``), written in ``FLUSH_BYTES`` writes.

        A message ``publish_frames`` does not handle goes through py-amqp (``_write``), after what
        was built before it, so the broker sees the messages in order, each counted once. After
        each write the broker's answers so far are read, as py-amqp does before every publish.
        """
        connection = channel.connection
        if connection is None:  # as py-amqp's basic_publish says it: a connection error, so reconnect
            raise RecoverableConnectionError("publish: connection closed")
        transport = connection.transport
        channel_id, frame_max = channel.channel_id, connection.frame_max
        pending: list[bytes] = []
        size = 0
        for first in batch:
            for where, item in ((route(first, self._events_exchange), first), *self._copies(first)):
                frames = publish_frames(
                    channel_id=channel_id,
                    frame_max=frame_max,
                    exchange=where.exchange,
                    routing_key=where.routing_key,
                    mandatory=where.mandatory,
                    body=item.body,
                    # As they are: one over 255 bytes makes it None, and ``_write`` then
                    # publishes it with ``amqp_properties``' hashed stand-ins.
                    content_type=item.content_type,
                    content_encoding=content_encoding(item.content_type),
                    headers=item.headers,
                    delivery_mode=PERSISTENT,
                    message_id=item.message_id,
                    timestamp=timestamp,
                    message_type=item.message_type or None,
                    correlation_id=item.headers.get(H.CORRELATION_ID) or None,
                )
                if frames is None:
                    if pending:
                        _send(connection, transport, pending)
                        pending, size = [], 0
                    self._write(channel, confirms, where, item, timestamp)
                    continue
                pending.append(frames)
                size += len(frames)
                if confirms is not None:
                    confirms.written(where.label(item))
                if size >= FLUSH_BYTES:
                    _send(connection, transport, pending)
                    pending, size = [], 0
                    take_in(connection)  # confirms taken in while a large batch is still being written
        if pending:
            _send(connection, transport, pending)

    def _write(
        self,
        channel: Any,
        confirms: ConfirmTracker | None,
        where: Route,
        item: OutgoingMessage,
        timestamp: int,
    ) -> None:
        message = channel.prepare_message(
            item.body,
            0,
            short_or(item.content_type, FALLBACK_CONTENT_TYPE),
            content_encoding(item.content_type),
            dict(item.headers),
            amqp_properties(item, timestamp),
        )
        if confirms is None:
            channel.basic_publish(
                message, exchange=where.exchange, routing_key=where.routing_key, mandatory=where.mandatory
            )
        else:
            confirms.publish(
                message,
                label=where.label(item),
                exchange=where.exchange,
                routing_key=where.routing_key,
                mandatory=where.mandatory,
            )

    def _publishing_channel(self) -> Any:
        if self._channel is None:
            self._connection.ensure_connection(max_retries=0, timeout=self._connect_timeout)
            channel = self._connection.channel()
            if self._amqp:
                buffered_reads(getattr(channel.connection, "transport", None))  # confirms: fewer recv
            if self._confirm:
                self._confirms = ConfirmTracker(channel)  # confirm.select on this channel
            elif self._amqp:  # without a listener py-amqp raises a return at some later read
                channel.events["basic_return"].add(_log_return)
            self._channel = channel
        return self._channel

    def _drop_channel(self) -> None:
        """After a channel error: close the channel (py-amqp reopened it, not in confirm mode)."""
        channel = self._channel
        self.forget()
        if channel is not None:
            self._connection.maybe_close_channel(channel)

    def _drop_connection(self) -> None:
        """After a connection error or timeout: forget the connection without talking to it."""
        self.forget()
        self._connection.collect()

    def _detach(self) -> None:
        if self._confirms is not None:
            self._confirms.detach()
            self._confirms = None


def _send(connection: Any, transport: Any, frames: list[bytes]) -> None:
    """One write of whole publishes (py-amqp's ``transport.write``: its error handling on send)."""
    transport.write(b"".join(frames))
    connection.bytes_sent += len(frames)  # what py-amqp's heartbeat check counts (one per publish)


def _log_return(exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
    properties = getattr(message, "properties", None) or {}
    _log.warning(
        "bus.publish_returned",
        message_id=properties.get("message_id"),
        destination=f"{exchange or '(default)'}/{routing_key}",
        error=str(exc),
    )
