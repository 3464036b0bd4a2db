# mypy: allow-untyped-calls
"""The publisher behind ``KombuBus.publish``: a batch out, confirmed, surviving reconnects.

A batch is written back-to-back on one channel; on RabbitMQ (confirm mode) the
confirms are then awaited together (``confirms.py``), instead of py-amqp's
``confirm_publish`` waiting for each message before sending the next. A lost
connection is re-established within ``PUBLISH_RETRY_POLICY`` and the whole
batch is published again on the new channel: the confirms that were in flight
on the old one are lost with it, and message ids are stable, so a message that
reaches the bus twice is deduped by its receivers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import structlog
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from emailer.adapters.bus.confirms import ConfirmTimeout, ConfirmTracker
from emailer.adapters.bus.errors import BusUnavailable, PublishFailed, describe

_log = structlog.get_logger(__name__)

PERSISTENT = 2
# Bounded: a publish that cannot get through within a few seconds raises to the caller.
# Each retry reconnects and publishes the whole batch again.
PUBLISH_RETRY_POLICY: Mapping[str, float] = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.5,
    "interval_max": 2.0,
}
CONFIRM_TIMEOUT = 30.0  # seconds the broker may take to confirm a whole batch


@dataclass(frozen=True)
class Outgoing:
    """One message as it goes on the wire, fixed once so that a republish sends the same."""

    body: bytes
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    content_type: str
    content_encoding: str
    properties: dict[str, Any]  # message_id, type, correlation_id
    mandatory: bool
    timestamp: int = field(default_factory=lambda: int(time.time()))  # AMQP: whole seconds

    @property
    def label(self) -> str:
        return f"{self.properties.get('message_id')} to {self.exchange or '(default)'}/{self.routing_key}"

    def amqp_properties(self) -> dict[str, Any]:
        return {**self.properties, "delivery_mode": PERSISTENT, "timestamp": self.timestamp}


def connection_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """What a lost (or unreachable) broker connection raises."""
    return (OperationalError, OSError, *connection.connection_errors)


class BatchPublisher:
    """Publishes on its own connection and channel. Not thread-safe: the caller serialises."""

    def __init__(
        self,
        *,
        connection: Connection,
        driver: str,
        confirm: bool,
        connect_timeout: float,
        confirm_timeout: float,
        safe_url: str,
    ) -> None:
        self._connection = connection
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

    def forget(self) -> None:
        """Drop the channel state; the caller closes the connection."""
        self._detach()
        self._channel = None

    def publish(self, batch: list[Outgoing]) -> None:
        """Publish ``batch``; in confirm mode return once every message of it was confirmed."""
        if not batch:
            return
        for attempt in count():
            try:
                self._publish_once(batch)
                return
            except ConfirmTimeout as exc:  # connected, yet the broker does not answer (blocked?)
                self._drop_connection()
                raise BusUnavailable(self._safe_url, str(exc)) from exc
            except self._connection.channel_errors as exc:
                self._drop_channel()
                raise PublishFailed(f"publish of {batch[0].label} etc. refused: {describe(exc)}") from exc
            except self._connection_errors as exc:
                self._drop_connection()
                if attempt >= PUBLISH_RETRY_POLICY["max_retries"]:
                    raise BusUnavailable(self._safe_url, describe(exc)) from exc
                pause = min(
                    PUBLISH_RETRY_POLICY["interval_start"] + attempt * PUBLISH_RETRY_POLICY["interval_step"],
                    PUBLISH_RETRY_POLICY["interval_max"],
                )
                _log.warning(
                    "bus.publish_retry",
                    url=self._safe_url,
                    error=describe(exc),
                    batch=len(batch),
                    attempt=attempt + 1,
                    retry_in=pause,
                )
                time.sleep(pause)

    def _publish_once(self, batch: list[Outgoing]) -> None:
        """One attempt: write the whole batch, then (confirm mode) wait for every confirm."""
        channel = self._publishing_channel()
        confirms = self._confirms
        for item in batch:
            message = channel.prepare_message(
                item.body, 0, item.content_type, item.content_encoding, item.headers, item.amqp_properties()
            )
            if confirms is None:
                channel.basic_publish(
                    message, exchange=item.exchange, routing_key=item.routing_key, mandatory=item.mandatory
                )
            else:
                confirms.publish(
                    message,
                    label=item.label,
                    exchange=item.exchange,
                    routing_key=item.routing_key,
                    mandatory=item.mandatory,
                )
        if confirms is not None:
            confirms.wait(self._confirm_timeout)

    def _publishing_channel(self) -> Any:
        if self._channel is None:
            self._connection.ensure_connection(max_retries=0, timeout=self._connect_timeout)
            channel = self._connection.channel()
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


def _log_return(exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
    properties = getattr(message, "properties", None) or {}
    _log.warning(
        "bus.publish_returned",
        message_id=properties.get("message_id"),
        destination=f"{exchange or '(default)'}/{routing_key}",
        error=str(exc),
    )
