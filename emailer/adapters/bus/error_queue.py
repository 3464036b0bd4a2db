# mypy: allow-untyped-calls
"""The error queue on RabbitMQ, for ops: read it without changing it, move messages out one at a time.

Reading (``browse``) consumes WITHOUT acking and then closes the channel: the
broker puts every unacked message back at its original place, so nothing is
lost or reordered. (``basic.get`` + reject-with-requeue would not do: the
rejected message goes back to the head and the next get returns it again.)

Taking (``take``) walks the same way through a snapshot: the messages that
were in the queue when it started (its depth then; workers may go on writing
into the queue, and what they write comes after the snapshot, so it is left
alone). For each message ``decide`` says: leave it, or move it (publish these
messages, possibly none for a purge). A moved message is published with a
publisher confirm, and only then is the original acked; a crash in between
leaves the message in both places, a duplicate the receiver's inbox absorbs.
Everything left is returned when the channel closes.

Publishing and reading use two connections; reading holds every message of
the snapshot unacked until it ends (prefetch unlimited), so a huge queue is
read into memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from emailer.adapters.bus.errors import BusError, BusUnavailable
from emailer.adapters.bus.failed import FailedMessage, from_transport
from emailer.adapters.bus.publishing import CONFIRM_TIMEOUT, BatchPublisher, connection_errors
from emailer.endpoint.faults import crash_point
from emailer.redaction import describe
from handlers.ports import OutgoingMessage

AFTER_CONFIRM_BEFORE_ACK = "errors_after_confirm_before_ack"
"""Crash point (``EMAILER_CRASH_AT``): a moved message is confirmed where it went, the original not acked."""

Decide = Callable[[FailedMessage], Sequence[OutgoingMessage] | None]
"""For one message: None to leave it, else what to publish before removing it ([] for a purge)."""


class ErrorQueueMissing(BusError):
    """There is no such queue on the broker."""


class TakeInterrupted(BusError):
    """The broker went away part way: ``moved`` messages were moved before it did."""

    def __init__(self, moved: int, cause: str) -> None:
        super().__init__(f"stopped after {moved} message(s): {cause}")
        self.moved = moved


@dataclass(frozen=True)
class Taken:
    """What a ``take`` did: how many it looked at and how many it moved."""

    seen: int
    moved: int


class ErrorQueue:
    """One error queue on one broker. ``with ErrorQueue(...) as errors:`` or ``connect()``/``close()``."""

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        connect_timeout: float = 10.0,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        idle_timeout: float = 2.0,
        crash_at: str | None = None,
    ) -> None:
        self.queue = queue
        self._reading = Connection(url, connect_timeout=connect_timeout)
        driver = self._reading.transport.driver_type
        if driver != "amqp":
            raise ValueError(f"the error queue can be read on RabbitMQ (amqp://) only, not {driver}")
        self._writing = Connection(url, connect_timeout=connect_timeout)
        self.safe_url: str = self._reading.as_uri()
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._crash_at = crash_at
        self._publisher = BatchPublisher(
            connection=self._writing,
            events_exchange="",
            driver=driver,
            confirm=True,
            connect_timeout=connect_timeout,
            confirm_timeout=confirm_timeout,
            safe_url=self.safe_url,
        )

    def __enter__(self) -> ErrorQueue:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect both ways; ``BusUnavailable`` if the broker does not answer, or
        ``ErrorQueueMissing`` if the queue is not there."""
        try:
            for connection in (self._reading, self._writing):
                try:
                    connection.ensure_connection(max_retries=1, timeout=self._connect_timeout)
                except connection_errors(connection) as exc:
                    raise BusUnavailable(self.safe_url, describe(exc)) from exc
            self.depth()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._publisher.forget()
        self._writing.release()
        self._reading.release()

    def depth(self) -> int:
        """Messages ready in the queue (not counting those someone holds unacked)."""
        channel = self._reading.channel()
        try:
            count: int = channel.queue_declare(queue=self.queue, passive=True).message_count
        except self._reading.channel_errors as exc:
            raise ErrorQueueMissing(f"no queue {self.queue!r} on {self.safe_url}: {describe(exc)}") from exc
        finally:
            _close_quietly(channel.close)
        return count

    def browse(self) -> list[FailedMessage]:
        """Every message of the snapshot, in queue order; the queue is left as it was."""
        found: list[FailedMessage] = []
        self.take(lambda message: found.append(message))  # decides None: every message stays
        return found

    def take(
        self,
        decide: Decide,
        *,
        limit: int | None = None,
        on_seen: Callable[[FailedMessage, bool], None] | None = None,
    ) -> Taken:
        """Walk the snapshot; move each message ``decide`` asks for (confirm, then ack).

        Stops early once ``limit`` messages were moved. ``on_seen(message, moved)``
        is called after each message (for a progress bar). A lost connection
        raises ``TakeInterrupted`` with the count moved so far.
        """
        snapshot = self.depth()
        seen = moved = 0
        if snapshot == 0:
            return Taken(0, 0)
        channel = self._reading.channel()
        if hasattr(channel, "auto_decode"):
            channel.auto_decode = False  # py-amqp would turn utf-8 bodies into str
        received: list[Message] = []
        consumer = Consumer(
            channel,
            queues=[Queue(self.queue, no_declare=True)],
            no_ack=False,
            on_message=received.append,
            on_decode_error=lambda message, _exc: received.append(message),
        )
        lost = connection_errors(self._reading)
        try:
            consumer.qos(prefetch_count=0)  # unlimited: what is left stays unacked until the end
            consumer.consume()
            while seen < snapshot and (limit is None or moved < limit):
                if not received and not self._wait(received):
                    break  # the queue shrank under us (someone else took messages)
                raw = received.pop(0)
                seen += 1
                message = _failed(raw)
                publish = decide(message)
                if publish is not None:
                    if publish:
                        self._publisher.publish(publish)
                    crash_point(AFTER_CONFIRM_BEFORE_ACK, self._crash_at)
                    raw.ack()
                    moved += 1
                if on_seen is not None:
                    on_seen(message, publish is not None)
        except BusUnavailable as exc:
            raise TakeInterrupted(moved, str(exc)) from exc
        except lost as exc:
            raise TakeInterrupted(moved, describe(exc)) from exc
        finally:
            # Closing the channel gives back every unacked message, each at its place.
            _close_quietly(consumer.cancel)
            _close_quietly(channel.close)
        return Taken(seen, moved)

    def _wait(self, received: list[Message]) -> bool:
        """Read the connection until a message arrives (True) or ``idle_timeout`` passes (False)."""
        deadline = time.monotonic() + self._idle_timeout
        while not received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self._reading.drain_events(timeout=remaining)
            except TimeoutError:
                return bool(received)
        return True


def _failed(raw: Message) -> FailedMessage:
    body: Any = raw.body
    if isinstance(body, str):
        body = body.encode(raw.content_encoding or "utf-8")
    return from_transport(raw.headers, raw.properties, bytes(body or b""))


def _close_quietly(close: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # closing what is going away anyway
        close()
