# mypy: allow-untyped-calls
"""Publisher confirms for a whole batch: publish back-to-back, then wait for the confirms together.

The protocol (RabbitMQ's confirm extension, as py-amqp 5 delivers it):

* ``confirm.select`` puts a channel in confirm mode. From then on the broker
  numbers the messages published on that channel 1, 2, 3, ... (the delivery
  tag). The count is per channel: a new channel (after a reconnect or a channel
  error) starts at 1 again, so a ``ConfirmTracker`` lives exactly as long as
  its channel.
* Every publish is answered, eventually, by ``basic.ack`` (the broker has
  taken responsibility: routed and, for a persistent message to a durable
  queue, written) or ``basic.nack`` (lost inside the broker). ``multiple=True``
  settles every tag up to and including ``delivery_tag``; confirms may come in
  any grouping.
* A ``mandatory`` message the broker cannot route comes back as
  ``basic.return`` *before* its ``basic.ack`` (the ack only says the broker is
  done with it). A return carries no delivery tag, so it is matched by the
  ``message_id`` property every message of ours carries.
* py-amqp calls ``channel.events['basic_ack' | 'basic_nack' | 'basic_return']``
  callbacks from whatever reads the socket: ``poll`` and ``wait`` below, and
  ``publishing.py``, which writes its own frames (``frames.py``, counted here by
  ``written``) and reads the socket after each write, so confirms are taken in
  while publishing. py-amqp's own ``basic_publish`` polls the socket before
  *every* message; where it is still used (``publish`` below writes the
  ``basic.publish`` frames itself) the batch polls once, before its first message.
* Confirms still outstanding when a channel is lost are lost with it: the
  caller publishes again on a new channel (and a new tracker).
"""

from __future__ import annotations

import contextlib
import time
from itertools import takewhile
from typing import Any

from amqp import spec
from amqp.exceptions import RecoverableConnectionError

from emailer.adapters.bus.errors import PublishFailed, PublishNotConfirmed

_PUBLISH = spec.Basic.Publish
_PUBLISH_ARGS = "Bssbb"  # ticket, exchange, routing key, mandatory, immediate


def take_in(connection: Any) -> None:
    """Read what the broker has sent so far (confirms, returns, heartbeats, ``connection.blocked``);
    never waits. A lost connection raises."""
    with contextlib.suppress(TimeoutError):  # socket.timeout: nothing to read
        connection.drain_events(timeout=0)


class ConfirmTimeout(Exception):
    """The broker did not confirm every message in time (neither ack nor nack)."""


class ConfirmTracker:
    """Confirm mode on one py-amqp channel: numbers what is published, records the answers.

    Use: ``publish`` each message of a batch, then ``wait`` once; it returns when
    every message was acked and raises for nacks, returns or a timeout. Not
    thread-safe (nor is the channel): the caller serialises.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._last_tag = 0  # delivery tag of the latest publish on this channel
        self._unconfirmed: dict[int, str] = {}  # tag -> what it was, in tag order
        self._nacked: list[str] = []
        self._returned: list[str] = []
        self._handlers = (
            ("basic_ack", self._on_ack),
            ("basic_nack", self._on_nack),
            ("basic_return", self._on_return),
        )
        for event, handler in self._handlers:
            channel.events[event].add(handler)
        channel.confirm_select()

    @property
    def unconfirmed(self) -> int:
        """How many published messages the broker has not answered yet."""
        return len(self._unconfirmed)

    def poll(self) -> None:
        """Take in what the broker sent meanwhile (confirms, returns, ``connection.blocked``); never waits."""
        connection = self.channel.connection
        if connection is None:
            raise RecoverableConnectionError("publish: connection closed")
        take_in(connection)

    def publish(self, message: Any, *, label: str, exchange: str, routing_key: str, mandatory: bool) -> None:
        """Send one message without waiting or reading; ``label`` names it in errors.

        py-amqp's ``Channel._basic_publish`` without its per-message poll (the
        caller ``poll``s once a batch): the same ``basic.publish`` method, header
        and body frames through the connection's frame writer.
        """
        arguments = (0, exchange, routing_key, mandatory, False)
        self.channel.send_method(_PUBLISH, _PUBLISH_ARGS, arguments, message)
        self._last_tag += 1
        self._unconfirmed[self._last_tag] = label

    def written(self, label: str) -> None:
        """Count one message its caller wrote on this channel itself (``publishing.py``: its own frames)."""
        self._last_tag += 1
        self._unconfirmed[self._last_tag] = label

    def wait(self, timeout: float) -> None:
        """Read the connection until every message published so far is confirmed.

        Raises ``PublishNotConfirmed`` if the broker nacked any, else
        ``PublishFailed`` if any mandatory one was returned unroutable (all the
        others were acked then), ``ConfirmTimeout`` if answers are still missing
        after ``timeout`` seconds. Connection and channel errors from the read
        propagate. Nacks and returns are reported once, then forgotten.
        """
        deadline = time.monotonic() + timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(
                    f"{len(self._unconfirmed)} message(s) not confirmed within {timeout:g}s, "
                    f"first {next(iter(self._unconfirmed.values()))}"
                )
            try:
                self.channel.connection.drain_events(timeout=remaining)
            except TimeoutError:  # socket.timeout: the deadline check above decides
                continue
        nacked, self._nacked = self._nacked, []
        returned, self._returned = self._returned, []
        if nacked:
            raise PublishNotConfirmed(f"broker nacked {len(nacked)} message(s): {'; '.join(nacked)}")
        if returned:
            raise PublishFailed(f"{len(returned)} message(s) returned unroutable: {'; '.join(returned)}")

    def detach(self) -> None:
        """Stop listening on the channel (it is being dropped or replaced)."""
        for event, handler in self._handlers:
            self.channel.events[event].discard(handler)

    # -- py-amqp callbacks ---------------------------------------------------------

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked.extend(self._settle(delivery_tag, multiple))

    def _on_return(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        properties = getattr(message, "properties", None) or {}
        message_id = properties.get("message_id", "(no message id)")
        self._returned.append(f"{message_id} to {exchange or '(default)'}/{routing_key}: {exc}")

    def _settle(self, delivery_tag: int, multiple: bool) -> list[str]:
        """Forget the tag (or, ``multiple``, every tag up to it; 0 means all); return their labels."""
        if not multiple:
            label = self._unconfirmed.pop(delivery_tag, None)
            return [] if label is None else [label]
        # Tags are inserted in increasing order, so the settled ones are a prefix.
        tags = list(takewhile(lambda t: delivery_tag == 0 or t <= delivery_tag, self._unconfirmed))
        return [self._unconfirmed.pop(tag) for tag in tags]
