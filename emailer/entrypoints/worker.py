"""The worker: the input-queue consumer, the scheduler and the outbox sweep, as threads of one process."""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from emailer import redaction
from emailer.adapters.persistence.background_relay import BackgroundRelay
from emailer.adapters.persistence.blob_refs import PurgeRules, purge_attachments
from emailer.adapters.persistence.inbox import purge_inbox, purge_provider_events
from emailer.adapters.persistence.reconnect import with_reconnect
from emailer.bootstrap import App
from emailer.endpoint.local_dispatch import DISPATCH, LocalDispatch
from emailer.endpoint.scheduler import schedule_due
from emailer.infrastructure import unavailable_dependency
from handlers.ports import lookup_of
from handlers.reconcile import reconcile_unknown_outcomes
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


WARM_CONNECTIONS = 4
"""Database connections opened before the threads start: the consumer's, the relay's, the scheduler's
and the sweep's (each of them would otherwise open its own in its first step, the consumer in its
first batch)."""
STAGGER = 1.0
"""The tickers' first steps are spread over this many seconds (at most their interval), not all at
start-up, where they would share the interpreter and the database with the consumer's first batch."""


class Ticker(threading.Thread):
    """Runs ``step`` every ``interval`` seconds until stopped, the first time after ``first_after``
    seconds; a failing step is logged and retried."""

    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], object],
        stop: threading.Event,
        first_after: float = 0.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.step = step
        self.stop = stop
        self.first_after = first_after

    def run(self) -> None:
        if self.first_after > 0:
            self.stop.wait(self.first_after)
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a tick must not kill the worker; the next one retries
                dependency = unavailable_dependency(exc)
                if dependency is not None:  # an outage, not a bug: one line, no stack, every tick
                    log.warning(
                        "worker.tick_waiting", ticker=self.name, dependency=dependency,
                        error=redaction.describe(exc),
                    )  # fmt: skip
                    self.stop.wait(self.interval)
                    continue
                log.error(
                    "worker.tick_failed",
                    ticker=self.name,
                    error=redaction.describe(exc),
                    stack=redaction.format_traceback(exc),
                )
            self.stop.wait(self.interval)


def staggered(intervals: Sequence[float], over: float = STAGGER) -> list[float]:
    """When each ticker takes its first step: the first at once, the others spread over ``over``
    seconds, each within its own interval."""
    return [min(interval, over) * i / len(intervals) for i, interval in enumerate(intervals)]


def purge_rules(app: App) -> PurgeRules:
    s = app.settings
    return PurgeRules(
        retention=timedelta(seconds=s.attachment_retention), grace=timedelta(seconds=s.blob_grace)
    )


class Worker:
    def __init__(self, app: App) -> None:
        self.app = app
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.relay: BackgroundRelay | None = None
        self._prepared = False

    def prepare(self) -> None:
        """What comes before the threads (``start`` calls it if nobody did): connect to the broker,
        declare, open the database connections the threads will use, and put what start-up made out of
        the collector's sight. Then the first messages pay for none of it."""
        if self._prepared:
            return
        self.app.bus.connect()
        self.reprobe_provider()
        self.app.bus.declare_delay_queues()
        self.warm_database()
        # What start-up made (modules, models, schemas, statements, pools) lives as long as the process:
        # out of the collector's sight, a full collection does not walk it again (~100k objects, tens
        # of ms on the consumer's path every few seconds).
        gc.collect()
        gc.freeze()
        self._prepared = True

    def warm_database(self, count: int = WARM_CONNECTIONS) -> int:
        """Open ``count`` pooled connections at once and give them back; how many opened. A database
        that does not answer is no reason not to start: the threads wait for it as they would anyway.

        The driver's own connections, outside SQLAlchemy's transactions: a SQLite connection of
        ``make_engine`` begins with ``BEGIN IMMEDIATE``, and a second one held open beside it would wait
        out the whole busy timeout for the first one's write lock (30 s at every ``emailer run``)."""
        opened = []
        try:
            for _ in range(count):
                connection = self.app.engine.raw_connection()
                opened.append(connection)
                cursor = connection.cursor()
                cursor.execute("SELECT 1")  # rolled back as it goes back to the pool
                cursor.close()
        except Exception as exc:  # noqa: BLE001 - the consumer pauses until the database answers
            log.warning("worker.warm_database_failed", error=redaction.describe(exc))
        finally:
            for connection in opened:
                connection.close()
        return len(opened)

    def start(self) -> None:
        s = self.app.settings
        self.prepare()
        # The consumer relays what it commits in the background: the broker's confirms and the
        # marking of the rows overlap with its next transaction (background_relay.py).
        self.relay = BackgroundRelay(self.app.outbox)
        self.app.pipeline.relay = self.relay
        consumer = threading.Thread(target=self._consume, name="consumer", daemon=True)
        steps: list[tuple[str, float, Callable[[], object]]] = [
            ("scheduler", s.scheduler_interval, self.schedule_once),
            ("outbox-sweep", s.outbox_sweep_interval, self.sweep_once),
            ("housekeeping", s.housekeeping_interval, self.housekeeping_once),
            ("attachment-purge", s.attachment_purge_interval, self.purge_attachments_once),
        ]
        if self.app.policy.resend_needs_lookup:
            steps.append(("reconciler", s.reconcile_interval, self.reconcile_once))
        firsts = staggered([interval for _, interval, _ in steps])
        self.threads = [consumer] + [
            Ticker(name, interval, step, self.stopping, first_after)
            for (name, interval, step), first_after in zip(steps, firsts, strict=True)
        ]
        self.app.pipeline.after_publish = self._local_dispatch()
        for t in self.threads:
            t.start()
        log.info("worker.started", queue=s.input_queue, prefetch=s.prefetch, batch=s.batch_size)

    def _consume(self) -> None:
        s = self.app.settings
        while not self.stopping.is_set():
            try:
                self.app.bus.consume(
                    self.app.pipeline.handle_batch,
                    prefetch=s.prefetch,
                    max_batch=s.batch_size,
                    should_stop=self.stopping.is_set,
                )
            except Exception as exc:  # noqa: BLE001 - reconnect and go on; unacked messages come back
                log.error(
                    "worker.consumer_failed_restarting",
                    error=redaction.describe(exc),
                    stack=redaction.format_traceback(exc),
                )
                self.stopping.wait(1.0)

    def _local_dispatch(self) -> LocalDispatch | None:
        """EMAILER_DISPATCH_LOCALLY (``emailer.endpoint.local_dispatch``); off where dispatching is made to
        fail on purpose (EMAILER_FAIL_HANDLING=DispatchEmail: recoverability must see every attempt)."""
        s = self.app.settings
        route = self.app.registry.route(DISPATCH)
        if not s.dispatch_locally or s.fail_handling == DISPATCH or route is None or route.batch is None:
            return None
        assert self.relay is not None
        return LocalDispatch(
            route.batch,
            self.app.new_uow,
            self.relay.publish_committed,  # after the EmailQueued the consumer handed over: in order
            s.input_queue,
            batch_in_hand=lambda: self.app.pipeline.batch_in_hand,
            batch_size=s.batch_size,
            wait_relayed=self.relay.wait_relayed,
            recent=self.app.recent,
        )

    def schedule_once(self) -> int:
        """One scheduler pass; a pass whose connection was lost before it committed runs again."""

        def tick() -> tuple[AbstractUnitOfWork, int]:
            uow = self.app.new_uow()
            return uow, schedule_due(uow, self.app.clock, self.app.policy, allowance=self.allowance)

        uow, queued = with_reconnect(tick)
        self.app.outbox.publish_committed(uow.take_committed())
        return queued

    def reconcile_once(self) -> Counter[str]:
        """One reconciliation pass: unknown outcomes looked up at the provider (``handlers.reconcile``)."""
        lookup = lookup_of(self.app.provider)
        if lookup is None:
            return Counter()
        uow = self.app.new_uow()
        outcomes = reconcile_unknown_outcomes(
            uow,
            lookup,
            self.app.provider.name,
            self.app.clock,
            self.app.policy,
            self.app.settings.reconcile_lookups,
        )
        self.app.outbox.publish_committed(uow.take_committed())
        if outcomes:
            log.info("worker.reconciled", **outcomes)
        return outcomes

    def allowance(self, limit: int) -> int:
        """How many emails the provider would take now (its shared pause and drain rate)."""
        gate = self.app.provider
        return self.app.provider_state.allowance(gate.name, self.app.clock.now(), gate.rate, limit)

    def reprobe_provider(self) -> None:
        """A worker that starts may carry a corrected API key: a configuration error is probed at once."""
        try:
            self.app.provider_state.reprobe(self.app.provider.name, self.app.clock.now())
        except Exception as exc:  # noqa: BLE001 - the probe then comes at its usual time
            log.warning("worker.reprobe_failed", error=redaction.describe(exc))

    def sweep_once(self) -> int:
        return self.app.outbox.sweep(timedelta(seconds=self.app.settings.outbox_sweep_after))

    def housekeeping_once(self) -> tuple[int, int]:
        """Purge sent outbox rows, old inbox ids and old provider event ids, each after its own retention."""
        s, now = self.app.settings, self.app.clock.now()
        sent = self.app.outbox.purge(now - timedelta(seconds=s.outbox_retention))
        handled = purge_inbox(self.app.engine, now - timedelta(seconds=s.inbox_retention))
        seen = purge_provider_events(self.app.engine, now - timedelta(seconds=s.provider_event_retention))
        if sent or handled or seen:
            log.info("worker.housekeeping", outbox_rows=sent, inbox_ids=handled, provider_event_ids=seen)
        return sent, handled

    def purge_attachments_once(self) -> int:
        """Delete the blobs of settled emails that nothing else needs (``blob_refs.py``)."""
        return purge_attachments(self.app.engine, self.app.blobs, self.app.clock, purge_rules(self.app))

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        if self.relay is not None:
            self.relay.close(timeout)
            self.app.pipeline.relay = self.app.outbox
            self.relay = None
        log.info("worker.stopped")
