"""Dispatch at once, on the consumer thread, what the consumer just accepted (EMAILER_DISPATCH_LOCALLY).

A ``DispatchEmail`` goes to the tail of the input queue: under load it comes
round in the consumer's next batch at the earliest, behind a backlog after all
of it. So once a commit that asked for dispatches has been handed to the outbox
relay (its ``EmailQueued`` first in the relay's order), the consumer runs the
dispatch batch handler (``handlers.dispatch_email.dispatch_emails``) on those
emails itself, before it takes its next batch, and hands what that committed to
the same relay, after the ``EmailQueued`` (a subscriber sees an email's events
in order).

Before its first provider call it waits (at most ``RELAY_WAIT``) until the
relay has published what the consumer handed over: the accept's ``EmailQueued``
go out while this thread waits on the broker, instead of waiting for the
interpreter lock behind the dispatch. Measured (bench/throughput.py --rate 270,
N=3000, one worker, alternating with the code before): accept p50/p99 from
receipt 9.5/22.2 and 9.6/25.7 ms against 11.0/32.0 and 11.1/32.5 ms; full path
p99 71.3/70.5 against 90.2/84.7 ms (its p50 27.5 -> 31 ms).

Only when the consumer is keeping up: batches lately half full or more mean a
backlog is waiting in the queue, and then acceptance comes first (a burst is taken in at the accept
path's speed, which the provider's state does not limit) and the messages
dispatch the emails when they come round.

The message still goes through the broker and stays the rule: it wakes whichever
worker takes it, and it is the way back after a crash here. When it arrives the
email has been attempted (not due any more) or is being attempted (held:
``SKIP LOCKED`` leaves it out), so handling it costs its batch one query. This
path acks nothing and nothing depends on it: an error just leaves the email to
its message. Crash-safety is the batch handler's, as on the message's path
(claim, send, record; never resent blind).

On by default. Measured (bench/throughput.py, N=3000, one worker, a quiet 2-core
machine, provider_max_rate=0): see bench/README.md. An earlier version ran this
on a thread of its own beside the consumer: worse on every figure (closed loop,
accept 675 emails/s against 1,325 without it; open loop at 200 emails/s, accept
p99 50 against 29 ms), as the two threads took turns on one interpreter lock and
the dispatcher's batches were smaller.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from contracts import DispatchEmail
from emailer import redaction
from emailer.domain import Email
from emailer.endpoint.recent import RecentEmails
from handlers.ports import MessageContext, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

BatchHandler = Callable[[list[tuple[Any, MessageContext]], AbstractUnitOfWork], list[Exception | None]]
DISPATCH = DispatchEmail.type_name()
RELAY_WAIT = 0.05
"""Seconds the dispatch waits at most for the relay to publish what the accept committed."""


class LocalDispatch:
    """Called with what a commit wrote, once handed to the relay: dispatches its DispatchEmails now."""

    def __init__(
        self,
        batch: BatchHandler,
        uow_factory: Callable[[], AbstractUnitOfWork],
        publish_committed: Callable[[Sequence[OutgoingMessage]], bool],
        input_queue: str,
        batch_in_hand: Callable[[], int],
        batch_size: int,
        wait_relayed: Callable[[float], bool] | None = None,
        recent: RecentEmails | None = None,
    ) -> None:
        self.batch = batch
        self.uow_factory = uow_factory
        self.publish_committed = publish_committed
        self.input_queue = input_queue
        self.batch_in_hand = batch_in_hand
        self.batch_size = batch_size
        self.wait_relayed = wait_relayed
        self.recent = recent
        """Where the accept's emails wait for their messages, under a backlog (``recent.py``)."""
        self._load = 0.0
        """The consumer's batches, how full on average (recent ones weigh most)."""

    def backlog(self) -> bool:
        """The consumer's batches have lately been half full or more: messages are waiting."""
        self._load = 0.75 * self._load + 0.25 * self.batch_in_hand()
        return 2 * self._load >= self.batch_size

    def __call__(self, written: Sequence[OutgoingMessage], emails: Sequence[Email] = ()) -> None:
        """``emails``: as the commit that wrote ``written`` left them; its claim takes those whose rows
        are unchanged without reading them again (``EmailRepository.claim``)."""
        if self.backlog():
            if self.recent is not None:
                self.recent.keep(emails)  # for the claim of their messages
            return  # acceptance first: the messages come round once the backlog is taken in
        items = [
            (
                _written(message.body),
                MessageContext(message.message_id, message.message_type, dict(message.headers)),
            )
            for message in written
            if message.message_type == DISPATCH and message.destination == self.input_queue
        ]
        if not items:
            return
        if self.wait_relayed is not None:
            # The accept's events first, alone: the relay's publish and confirms are not kept waiting
            # for the interpreter lock by the dispatch (bounded; the dispatch goes on regardless).
            self.wait_relayed(RELAY_WAIT)
        uow = self.uow_factory()
        uow.offered = {e.id: e for e in emails}
        uow.relay_each_commit = self.publish_committed  # each slice's events as it is recorded
        try:
            errors = self.batch(items, uow)
        except Exception as exc:  # noqa: BLE001 - their messages will dispatch them
            log.warning("local_dispatch.failed", size=len(items), error=redaction.describe(exc))
            errors = []
        left = sum(error is not None for error in errors)
        if left:
            log.info("local_dispatch.left_to_messages", count=left)


def _written(body: bytes) -> DispatchEmail:
    """A DispatchEmail this process just wrote (packed: ``email_id``, ``more_email_ids``)."""
    fields = json.loads(body)
    return DispatchEmail.model_construct(
        email_id=fields["email_id"], more_email_ids=tuple(fields.get("more_email_ids", ()))
    )
