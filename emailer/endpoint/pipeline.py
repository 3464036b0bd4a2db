"""The message pipeline: deliveries in, handlers run, state committed, deliveries acked, outbox relayed.

A batch of deliveries (up to the prefetch window) is handled in ONE
transaction when every handler in it is transactional: the inbox check and
record, the handler's changes and the outbox rows of all its messages commit
together, and only then is each delivery acked. If anything in the batch
fails, the transaction is rolled back and the messages are handled one by one,
so one bad message costs only itself.

Failures never vanish: an invalid message goes to the error queue with the
reason at once; any other exception goes through recoverability
(``recoverability.py``: immediate retries, delayed retries, then the error
queue, counted in the message's headers), except an infrastructure failure
(``emailer.infrastructure``: the database, broker or object store does not
answer): then the deliveries are left unsettled and ``handle_batch`` raises
``InfrastructureUnavailable`` once the rest of the batch is done, so that the
consumer pauses and hands them over again; no retry is spent.
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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import structlog

from contracts import Message
from contracts.wire import H, type_name
from emailer import redaction
from emailer.domain import DomainError, Email
from emailer.endpoint.codec import Decoded, IncomingDelivery, decode
from emailer.endpoint.faults import AFTER_COMMIT_BEFORE_PUBLISH, crash_point, failure_point
from emailer.endpoint.recoverability import (
    ABANDONED,
    AttemptAbandoned,
    MoveToError,
    RecoverabilityPolicy,
    SeenHere,
    counts,
)
from emailer.endpoint.registry import Registry
from emailer.infrastructure import InfrastructureUnavailable, unavailable_dependency
from emailer.signing import FORGED, SIGNATURE_HEADER, Signer, is_internal
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext, OutgoingMessage
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

PERMANENT = (InvalidMessage, DomainError)
REFUSED_LOG_EVERY = 100


class Settleable(IncomingDelivery, Protocol):
    """A delivery the pipeline can settle: ack once committed, requeue to have it again."""

    @property
    def redelivered(self) -> bool:
        """The broker delivered it before (to this process or to one that is gone)."""

    def ack(self) -> None: ...

    def requeue(self) -> None: ...


D = TypeVar("D", bound=Settleable)
D_contra = TypeVar("D_contra", bound=Settleable, contravariant=True)


class ErrorQueue(Protocol[D_contra]):
    """Moves a delivery to the error queue, or back for a retry, with a confirm; then acks it."""

    def send_to_error(
        self,
        delivery: D_contra,
        reason: str,
        exc: BaseException | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None: ...

    def send_to_retry(self, delivery: D_contra, headers: Mapping[str, str], delay: float) -> None:
        """The same message (body, headers with ``headers`` replacing theirs) back on the input queue,
        at once (``delay`` 0) or after ``delay`` seconds; the delivery is acked once that is confirmed."""


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
        recoverability: RecoverabilityPolicy | None = None,
        fail_handling: str | None = None,
        ack_all: Callable[[Sequence[D]], None] | None = None,
    ) -> None:
        """``signer`` verifies internal commands; without one every internal command is refused.

        ``ack_all`` acks the deliveries a commit settled, in order (the bus's, to send their acks
        together); without it each is acked in turn.

        ``fail_handling`` (tests only): a message type whose every handling raises (``faults.py``).
        """
        self.registry = registry
        self.recoverability = recoverability or RecoverabilityPolicy()
        self.fail_handling = fail_handling
        self._seen = SeenHere()
        self._outage: InfrastructureUnavailable | None = None
        self.signer = signer
        self.uow_factory = uow_factory
        self._ack_all = ack_all or _ack_each
        self.relay = relay
        self.errors = errors
        self.crash_at = crash_at
        self._refused: dict[str, int] = {}
        self._pool = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="dispatch") if concurrency > 1 else None
        )
        self._lock = threading.Lock()
        self.after_publish: Callable[[Sequence[OutgoingMessage], Sequence[Email]], None] | None = None
        """Given what a commit wrote once it is handed to the relay, and the emails as that commit left
        them (the worker's local dispatch)."""
        self.batch_in_hand = 0
        """How many deliveries the batch being handled has (a full batch: a backlog is waiting)."""

    # ------------------------------------------------------------ from the bus

    def handle_batch(self, deliveries: Sequence[D]) -> None:
        """Handle, settle and relay; raises ``InfrastructureUnavailable`` (after the rest of the batch)
        if a dependency was down: the deliveries it left unsettled are to be handed over again."""
        self._outage = None
        self.batch_in_hand = len(deliveries)
        decoded: list[tuple[D, Decoded]] = []
        for delivery in deliveries:
            abandoned = delivery.redelivered and delivery.message_id not in self._seen
            self._seen.add(delivery.message_id)
            if abandoned:
                # Its worker is gone, maybe killed by this very message: a failed attempt.
                self._failed(delivery, AttemptAbandoned(ABANDONED), None)
                continue
            try:
                signed = self._refuse_forged(delivery)
                decoded.append((delivery, decode(delivery, self.registry, trusted=signed)))
            except InvalidMessage as exc:
                self._to_error_queue(delivery, exc, None, _spent(delivery.headers))
        together = [(d, x) for d, x in decoded if x.route.transactional]
        if together:
            self._handle_together(together)
        alone = [(d, x) for d, x in decoded if not x.route.transactional]
        if alone:
            self._handle_alone(alone)
        outage, self._outage = self._outage, None
        if outage is not None:
            raise outage

    def _refuse_forged(self, delivery: D) -> bool:
        """An internal command must carry Emailer's signature over its id, type and body.

        True for an internal command that does: Emailer wrote it (it may be decoded as trusted).
        """
        name = type_name(delivery.message_type) if delivery.message_type else ""
        if not is_internal(name):
            return False
        signature = delivery.headers.get(SIGNATURE_HEADER)
        if self.signer is None or not self.signer.verify(delivery.message_id, name, delivery.body, signature):
            raise InvalidMessage(FORGED)
        return True

    def _handle_together(self, items: list[tuple[D, Decoded]]) -> None:
        try:
            written, emails = self._run_transaction([x for _, x in items])
        except Exception as exc:
            if len(items) == 1 or unavailable_dependency(exc) is not None:
                for delivery, decoded in items:
                    self._failed(delivery, exc, decoded.route.name)
            else:
                log.info("pipeline.batch_failed_one_by_one", size=len(items), error=redaction.describe(exc))
                for pair in items:
                    self._handle_together([pair])
            return
        self._after_commit([d for d, _ in items], written, emails)

    def _run_transaction(self, items: list[Decoded]) -> tuple[list[OutgoingMessage], list[Email]]:
        """What the commit wrote to the outbox, and the emails it saved (as it left them)."""
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
                    failure_point(item.context.message_type, self.fail_handling)
                    item.route.handler(item.message, uow)
                    uow.inbox.record(item.context.message_id, item.context.message_type)
                    uow.collect()
            written = uow.commit()
        return written, uow.touched()

    @staticmethod
    def _prefetch(uow: AbstractUnitOfWork, items: list[Decoded]) -> None:
        """One round trip per kind of lookup for the whole batch, instead of one per message.

        A route's prefetch runs for a single message too: one RecordDeliveryReports carries up to
        1,000 reports, whose lookups are a batch of their own."""
        by_route: dict[str, list[Decoded]] = {}
        for item in items:
            by_route.setdefault(item.context.message_type, []).append(item)
        with uow.lookups_together():  # its lookups in one round trip (after the transaction's BEGIN)
            if len(items) > 1:
                uow.inbox.preload(item.context.message_id for item in items)
            for group in by_route.values():
                prefetch = group[0].route.prefetch
                if prefetch is not None:
                    prefetch([item.message for item in group], uow)

    def _handle_alone(self, items: list[tuple[D, Decoded]]) -> None:
        """Handlers that commit on their own (DispatchEmail). A route with a ``batch`` handler gets the
        messages of the batch at once; the others run up to ``concurrency`` at once in a thread pool,
        as they wait on the provider. Acks, failures and the relay stay on the calling (consumer)
        thread, which owns the channel."""
        by_route: dict[str, list[tuple[D, Decoded]]] = {}
        for pair in items:
            by_route.setdefault(pair[1].context.message_type, []).append(pair)
        for group in by_route.values():
            if group[0][1].route.batch is not None:
                self._handle_batch_alone(group)
                continue
            if self._pool is None or len(group) == 1:
                results = [self._run_alone(item) for _, item in group]
            else:
                results = list(self._pool.map(self._run_alone, [item for _, item in group]))
            for (delivery, item), (written, exc) in zip(group, results, strict=True):
                if exc is None:
                    self._after_commit([delivery], written)
                else:
                    self.relay.publish_committed(written)  # what it did commit before failing
                    self._failed(delivery, exc, item.route.name)

    def _handle_batch_alone(self, group: list[tuple[D, Decoded]]) -> None:
        """One call of the route's ``batch`` handler, each of its commits handed to the relay as it is made
        (packed DispatchEmails: a batch may be thousands of emails, recorded a slice at a time); then the
        acks of what it finished, and recoverability for each message it could not."""
        route = group[0][1].route
        assert route.batch is not None
        uow = self.uow_factory()
        uow.relay_each_commit = self.relay.publish_committed  # a slice's events go out as it is recorded
        with structlog.contextvars.bound_contextvars(message_type=route.message_type.type_name()):
            try:
                failure_point(group[0][1].context.message_type, self.fail_handling)
                errors = route.batch([(item.message, item.context) for _, item in group], uow)
            except Exception as exc:  # noqa: BLE001 - the handler's own failure is every message's
                errors = [exc] * len(group)
        done = [delivery for (delivery, _), error in zip(group, errors, strict=True) if error is None]
        self._after_commit(done, [])  # every commit of the batch went to the relay as it was made
        for (delivery, item), error in zip(group, errors, strict=True):
            if error is not None:
                self._failed(delivery, error, item.route.name)

    def _run_alone(self, item: Decoded) -> tuple[list[OutgoingMessage], Exception | None]:
        uow = self.uow_factory()
        uow.context = item.context
        with structlog.contextvars.bound_contextvars(
            message_id=item.context.message_id,
            correlation_id=item.context.correlation_id,
            message_type=item.context.message_type,
        ):
            try:
                failure_point(item.context.message_type, self.fail_handling)
                item.route.handler(item.message, uow)
            except Exception as exc:
                return uow.take_committed(), exc
        return uow.take_committed(), None

    def _after_commit(
        self, deliveries: list[D], written: list[OutgoingMessage], emails: Sequence[Email] = ()
    ) -> None:
        crash_point(AFTER_COMMIT_BEFORE_PUBLISH, self.crash_at)
        if deliveries:
            self._ack_all(deliveries)
        if self.relay.publish_committed(written) and written and self.after_publish is not None:
            self.after_publish(written, emails)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ----------------------------------------------------------- in process

    def handle_local(self, message: Message, context: MessageContext) -> None:
        """Handle a message in this process (the embedded gateway); raises on failure."""
        route = self.registry.route(message.type_name())
        if route is None or not route.transactional:
            raise InvalidMessage(f"{message.type_name()} cannot be handled in process")
        written, _ = self._run_transaction([Decoded(route, message, context)])
        crash_point(AFTER_COMMIT_BEFORE_PUBLISH, self.crash_at)
        self.relay.publish_committed(written)

    # ------------------------------------------------------------ failures

    def _failed(self, delivery: D, exc: Exception, handler: str | None) -> None:
        """Recoverability for one delivery (see the module's docstring)."""
        if isinstance(exc, PERMANENT):
            self._to_error_queue(delivery, exc, handler, _spent(delivery.headers))
            return
        dependency = unavailable_dependency(exc)
        if dependency is not None:
            if self._outage is None:
                self._outage = InfrastructureUnavailable(dependency, exc)
            return  # unsettled: the consumer pauses and hands it over again
        decision = self.recoverability.decide(delivery.headers, datetime.now(UTC))
        immediate, delayed = counts(delivery.headers)
        if isinstance(decision, MoveToError):
            self._to_error_queue(delivery, exc, handler, decision.headers)
            return
        log.warning(
            "pipeline.handler_failed_retrying",
            message_id=delivery.message_id,
            message_type=delivery.message_type,
            handler=handler,
            immediate_retries=immediate,
            delayed_retries=delayed,
            retry_in=decision.delay,
            error=redaction.describe(exc),
        )
        try:
            self.errors.send_to_retry(delivery, decision.headers, decision.delay)
        except Exception as refused:  # noqa: BLE001 - never lost: it stays on the input queue
            self._refused_by_error_queue(delivery, refused)

    def _to_error_queue(
        self, delivery: D, exc: Exception, handler: str | None, spent: Mapping[str, str]
    ) -> None:
        # Our own errors say what is wrong with the message; anything else only as redacted.
        reason = str(exc) if isinstance(exc, (*PERMANENT, AttemptAbandoned)) else redaction.message(exc)
        log.error(
            "pipeline.moved_to_error_queue",
            message_id=delivery.message_id,
            message_type=delivery.message_type,
            handler=handler,
            immediate_retries=spent.get(H.IMMEDIATE_RETRIES),
            delayed_retries=spent.get(H.RETRIES),
            reason=reason if isinstance(exc, PERMANENT) else redaction.describe(exc),
        )
        extra = {**spent, **({H.HANDLER: handler} if handler else {})}
        try:
            self.errors.send_to_error(delivery, reason, exc, extra)
        except Exception as refused:  # noqa: BLE001 - never lost, never blocking the batch
            self._refused_by_error_queue(delivery, refused)
            return
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


def _ack_each(deliveries: Sequence[Settleable]) -> None:
    for delivery in deliveries:
        delivery.ack()


def _spent(headers: Mapping[str, str]) -> dict[str, str]:
    """The retry counts a message carries, for a failure that spends no more of them."""
    immediate, delayed = counts(headers)
    return {H.IMMEDIATE_RETRIES: str(immediate), H.RETRIES: str(delayed)}
