"""The message pipeline: deliveries in, handlers run, state committed, deliveries acked, outbox relayed.

A batch of deliveries (up to the prefetch window) is handled in ONE
transaction when every handler in it is transactional: the inbox check and
record, the handler's changes and the outbox rows of all its messages commit
together, and only then is each delivery acked. If anything in the batch
fails, the transaction is rolled back and the messages are handled one by one,
so one bad message costs only itself.

Failures never vanish: an invalid message goes to the error queue with the
reason at once; any other exception is retried a few times (the delivery is
requeued, ``emailer.retries.IMMEDIATE_RETRIES``), then goes to the error queue.
Exceptions are logged and put into error-queue headers only as
``emailer.redaction`` describes them (never a statement's parameters).

A message the error queue will not take (the broker refuses even the minimal
copy, or is gone) is never dropped: it is requeued, stays on the input queue,
costs only itself (the rest of its batch goes on) and is logged at error level
as ``pipeline.error_queue_refused`` (its first time and every
``REFUSED_LOG_EVERY``-th). It is not rejected without requeue: whether the
input queue has a dead-letter exchange is broker policy the worker cannot see,
and without one RabbitMQ would discard the message.

Internal commands (``emailer.signing.INTERNAL_COMMANDS``) are handled only
with a valid ``Emailer.Signature``; anything else claiming to be one goes to
the error queue as "forged or unsigned internal command", before its body is
even decoded.

The pipeline knows no transport and no database: it takes deliveries, an error
queue and an outbox relay through the small protocols below.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

import structlog

from contracts import Message
from contracts.wire import type_name
from emailer import redaction
from emailer.domain import DomainError
from emailer.endpoint.codec import Decoded, IncomingDelivery, decode
from emailer.endpoint.faults import AFTER_COMMIT_BEFORE_PUBLISH, crash_point
from emailer.endpoint.registry import Registry
from emailer.retries import IMMEDIATE_RETRIES
from emailer.signing import FORGED, SIGNATURE_HEADER, Signer, is_internal
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

PERMANENT = (InvalidMessage, DomainError)
REFUSED_LOG_EVERY = 100


class Settleable(IncomingDelivery, Protocol):
    """A delivery the pipeline can settle: ack once committed, requeue to have it again."""

    def ack(self) -> None: ...

    def requeue(self) -> None: ...


D = TypeVar("D", bound=Settleable)
D_contra = TypeVar("D_contra", bound=Settleable, contravariant=True)


class ErrorQueue(Protocol[D_contra]):
    """Moves a delivery to the error queue with the reason, then acks it."""

    def send_to_error(self, delivery: D_contra, reason: str, exc: BaseException | None = None) -> None: ...


class Relay(Protocol):
    """Publishes what a commit wrote to the outbox; a failure leaves it to the sweep (never raises)."""

    def publish_committed(self, messages: Sequence[OutgoingMessage]) -> bool: ...


class MessagePipeline(Generic[D]):
    def __init__(
        self,
        registry: Registry,
        uow_factory: Callable[[], AbstractUnitOfWork],
        relay: Relay,
        errors: ErrorQueue[D],
        crash_at: str | None = None,
        concurrency: int = 1,
        signer: Signer | None = None,
    ) -> None:
        """``signer`` verifies internal commands; without one every internal command is refused."""
        self.registry = registry
        self.signer = signer
        self.uow_factory = uow_factory
        self.relay = relay
        self.errors = errors
        self.crash_at = crash_at
        self._failures: dict[str, int] = {}
        self._refused: dict[str, int] = {}
        self._pool = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="dispatch") if concurrency > 1 else None
        )
        self._lock = threading.Lock()

    # ------------------------------------------------------------ from the bus

    def handle_batch(self, deliveries: Sequence[D]) -> None:
        decoded: list[tuple[D, Decoded]] = []
        for delivery in deliveries:
            try:
                self._refuse_forged(delivery)
                decoded.append((delivery, decode(delivery, self.registry)))
            except InvalidMessage as exc:
                self._to_error_queue(delivery, exc)
        together = [(d, x) for d, x in decoded if x.route.transactional]
        if together:
            self._handle_together(together)
        alone = [(d, x) for d, x in decoded if not x.route.transactional]
        if alone:
            self._handle_alone(alone)

    def _refuse_forged(self, delivery: D) -> None:
        """An internal command must carry Emailer's signature over its id, type and body."""
        name = type_name(delivery.message_type) if delivery.message_type else ""
        if not is_internal(name):
            return
        signature = delivery.headers.get(SIGNATURE_HEADER)
        if self.signer is None or not self.signer.verify(delivery.message_id, name, delivery.body, signature):
            raise InvalidMessage(FORGED)

    def _handle_together(self, items: list[tuple[D, Decoded]]) -> None:
        try:
            written = self._run_transaction([x for _, x in items])
        except Exception as exc:
            if len(items) == 1:
                self._failed(items[0][0], exc)
            else:
                log.info(
                    "pipeline.batch_failed_one_by_one", size=len(items), error=redaction.describe(exc)
                )
                for item in items:
                    self._handle_together([item])
            return
        self._after_commit([d for d, _ in items], written)

    def _run_transaction(self, items: list[Decoded]) -> list[OutgoingMessage]:
        uow = self.uow_factory()
        with uow:
            self._prefetch(uow, items)
            for item in items:
                with structlog.contextvars.bound_contextvars(
                    message_id=item.context.message_id,
                    correlation_id=item.context.correlation_id,
                    message_type=item.context.message_type,
                ):
                    uow.context = item.context
                    if uow.inbox.seen(item.context.message_id):
                        log.info("pipeline.duplicate_message_ignored")
                        continue
                    item.route.handler(item.message, uow)
                    uow.inbox.record(item.context.message_id, item.context.message_type)
                    uow.collect()
            return uow.commit()

    @staticmethod
    def _prefetch(uow: AbstractUnitOfWork, items: list[Decoded]) -> None:
        """One round trip per kind of lookup for the whole batch, instead of one per message."""
        if len(items) < 2:
            return
        uow.inbox.preload(item.context.message_id for item in items)
        by_route: dict[str, list[Decoded]] = {}
        for item in items:
            by_route.setdefault(item.context.message_type, []).append(item)
        for group in by_route.values():
            prefetch = group[0].route.prefetch
            if prefetch is not None:
                prefetch([item.message for item in group], uow)

    def _handle_alone(self, items: list[tuple[D, Decoded]]) -> None:
        """Handlers that commit on their own (DispatchEmail): up to ``concurrency`` at once.

        They wait on the provider, so they overlap in a thread pool; acks, failures
        and the relay stay on the calling (consumer) thread, which owns the channel.
        """
        if self._pool is None or len(items) == 1:
            results = [self._run_alone(item) for _, item in items]
        else:
            results = list(self._pool.map(self._run_alone, [item for _, item in items]))
        for (delivery, _), (written, exc) in zip(items, results, strict=True):
            if exc is None:
                self._after_commit([delivery], written)
            else:
                self.relay.publish_committed(written)  # what it did commit before failing
                self._failed(delivery, exc)

    def _run_alone(self, item: Decoded) -> tuple[list[OutgoingMessage], Exception | None]:
        uow = self.uow_factory()
        uow.context = item.context
        with structlog.contextvars.bound_contextvars(
            message_id=item.context.message_id,
            correlation_id=item.context.correlation_id,
            message_type=item.context.message_type,
        ):
            try:
                item.route.handler(item.message, uow)
            except Exception as exc:
                return uow.take_committed(), exc
        return uow.take_committed(), None

    def _after_commit(self, deliveries: list[D], written: list[OutgoingMessage]) -> None:
        crash_point(AFTER_COMMIT_BEFORE_PUBLISH, self.crash_at)
        for delivery in deliveries:
            delivery.ack()
            self._forget(delivery.message_id)
        self.relay.publish_committed(written)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ----------------------------------------------------------- in process

    def handle_local(self, message: Message, context: MessageContext) -> None:
        """Handle a message in this process (the embedded gateway); raises on failure."""
        route = self.registry.route(message.type_name())
        if route is None or not route.transactional:
            raise InvalidMessage(f"{message.type_name()} cannot be handled in process")
        written = self._run_transaction([Decoded(route, message, context)])
        crash_point(AFTER_COMMIT_BEFORE_PUBLISH, self.crash_at)
        self.relay.publish_committed(written)

    # ------------------------------------------------------------ failures

    def _failed(self, delivery: D, exc: Exception) -> None:
        if isinstance(exc, PERMANENT):
            self._to_error_queue(delivery, exc)
            return
        with self._lock:
            count = self._failures.get(delivery.message_id, 0) + 1
            self._failures[delivery.message_id] = count
        if count > IMMEDIATE_RETRIES:
            self._to_error_queue(delivery, exc)
            return
        log.warning(
            "pipeline.handler_failed_retrying",
            message_id=delivery.message_id,
            attempt=count,
            error=redaction.describe(exc),
        )
        delivery.requeue()

    def _to_error_queue(self, delivery: D, exc: Exception) -> None:
        # Our own errors say what is wrong with the message; anything else only as redacted.
        reason = str(exc) if isinstance(exc, PERMANENT) else redaction.message(exc)
        log.error(
            "pipeline.moved_to_error_queue",
            message_id=delivery.message_id,
            message_type=delivery.message_type,
            reason=reason if isinstance(exc, PERMANENT) else redaction.describe(exc),
        )
        try:
            self.errors.send_to_error(delivery, reason, exc)
        except Exception as refused:  # noqa: BLE001 - never lost, never blocking the batch
            self._refused_by_error_queue(delivery, refused)
            return
        self._forget(delivery.message_id)
        with self._lock:
            self._refused.pop(delivery.message_id, None)

    def _refused_by_error_queue(self, delivery: D, refused: Exception) -> None:
        """Keep the message on the input queue (requeue); the rest of the batch goes on."""
        with self._lock:
            times = self._refused.get(delivery.message_id, 0) + 1
            self._refused[delivery.message_id] = times
        if times == 1 or times % REFUSED_LOG_EVERY == 0:
            log.error(
                "pipeline.error_queue_refused",
                message_id=delivery.message_id,
                message_type=delivery.message_type,
                times=times,
                error=redaction.describe(refused),
                kept="requeued on the input queue",
            )
        try:
            delivery.requeue()
        except Exception as lost:  # noqa: BLE001 - settled already, or the channel is gone:
            # either way the broker still holds the message (unacked ones come back).
            log.warning(
                "pipeline.requeue_failed", message_id=delivery.message_id, error=redaction.describe(lost)
            )

    def _forget(self, message_id: str) -> None:
        with self._lock:
            self._failures.pop(message_id, None)
