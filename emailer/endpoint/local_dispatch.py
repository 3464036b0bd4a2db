"""Dispatch at once, in the process that accepted the email, beside the consumer (EMAILER_DISPATCH_LOCALLY).

A ``DispatchEmail`` goes to the tail of the input queue: behind a backlog of
commands it waits for all of them, and the consumer runs dispatches and
acceptances one batch after the other. So once a commit that asked for
dispatches is published (its ``EmailQueued`` confirmed first), the worker also
hands those dispatches to a thread of its own, which runs the same batch handler
(``handlers.dispatch_email.dispatch_emails``) while the consumer goes on.

The message still goes through the broker and stays the rule: it wakes whichever
worker takes it, and it is the way back after a crash here. When it arrives the
email has been attempted (not due any more) or is being attempted (held:
``SKIP LOCKED`` leaves it out), so handling it costs its batch one query. This
path acks nothing and nothing depends on it: a full hand-over queue, an error or
a stop just leaves the email to its message. Crash-safety is the batch handler's,
as on the consumer's path (claim, send, record; never resent blind).

What the dispatcher commits goes to the same outbox relay as the consumer's
commits, after the ``EmailQueued`` that asked for it, so a subscriber still sees
an email's events in order.

Off by default. Measured (bench/throughput.py, N=3000, one worker, a quiet 2-core
machine, provider_max_rate=0): closed loop, accept 675 emails/s against 1,325
without it and the full path 284 against 346; open loop at 200 emails/s, accept
p50/p99 24/50 ms against 11/29 ms and the full path 76/130 ms against 48/117 ms.
One process has one interpreter lock: the two threads take turns on it, and the
dispatcher's smaller batches cost more per email.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from contracts import DispatchEmail
from emailer import redaction
from handlers.ports import MessageContext, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

BatchHandler = Callable[[list[tuple[Any, MessageContext]], AbstractUnitOfWork], list[Exception | None]]
DISPATCH = DispatchEmail.type_name()


class LocalDispatcher(threading.Thread):
    """``offer`` the messages a commit wrote (and published); the thread dispatches their DispatchEmails."""

    def __init__(
        self,
        batch: BatchHandler,
        uow_factory: Callable[[], AbstractUnitOfWork],
        publish_committed: Callable[[Sequence[OutgoingMessage]], bool],
        input_queue: str,
        batch_size: int,
        stop: threading.Event,
        capacity: int = 10_000,
    ) -> None:
        super().__init__(name="local-dispatch", daemon=True)
        self.batch = batch
        self.uow_factory = uow_factory
        self.publish_committed = publish_committed
        self.input_queue = input_queue
        self.batch_size = batch_size
        self.stop = stop
        self._waiting: queue.Queue[tuple[DispatchEmail, MessageContext]] = queue.Queue(capacity)

    def offer(self, written: Sequence[OutgoingMessage]) -> None:
        """Take the DispatchEmails to this endpoint among ``written`` (if full: left to their messages)."""
        for message in written:
            if message.message_type != DISPATCH or message.destination != self.input_queue:
                continue
            command = DispatchEmail.model_construct(email_id=json.loads(message.body)["email_id"])
            context = MessageContext(message.message_id, message.message_type, dict(message.headers))
            try:
                self._waiting.put_nowait((command, context))
            except queue.Full:
                return

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                first = self._waiting.get(timeout=0.2)
            except queue.Empty:
                continue
            items = [first]
            while len(items) < self.batch_size:
                try:
                    items.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            self._dispatch(items)

    def _dispatch(self, items: list[tuple[DispatchEmail, MessageContext]]) -> None:
        uow = self.uow_factory()
        try:
            errors = self.batch(list(items), uow)
        except Exception as exc:  # noqa: BLE001 - their messages will dispatch them
            log.warning("local_dispatch.failed", size=len(items), error=redaction.describe(exc))
            errors = []
        self.publish_committed(uow.take_committed())
        left = sum(error is not None for error in errors)
        if left:
            log.info("local_dispatch.left_to_messages", count=left)
