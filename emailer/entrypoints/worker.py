"""The worker: the input-queue consumer, the scheduler and the outbox sweep, as threads of one process."""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Callable
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


class Ticker(threading.Thread):
    """Runs ``step`` every ``interval`` seconds until stopped; a failing step is logged and retried."""

    def __init__(self, name: str, interval: float, step: Callable[[], object], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.step = step
        self.stop = stop

    def run(self) -> None:
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

    def start(self) -> None:
        s = self.app.settings
        self.app.bus.connect()
        self.reprobe_provider()
        self.app.bus.declare_delay_queues()
        # The consumer relays what it commits in the background: the broker's confirms and the
        # marking of the rows overlap with its next transaction (background_relay.py).
        self.relay = BackgroundRelay(self.app.outbox)
        self.app.pipeline.relay = self.relay
        consumer = threading.Thread(target=self._consume, name="consumer", daemon=True)
        self.threads = [
            consumer,
            Ticker("scheduler", s.scheduler_interval, self.schedule_once, self.stopping),
            Ticker("outbox-sweep", s.outbox_sweep_interval, self.sweep_once, self.stopping),
            Ticker("housekeeping", s.housekeeping_interval, self.housekeeping_once, self.stopping),
            Ticker(
                "attachment-purge", s.attachment_purge_interval, self.purge_attachments_once, self.stopping
            ),
        ]
        self.app.pipeline.after_publish = self._local_dispatch()
        if self.app.policy.resend_needs_lookup:
            self.threads.append(
                Ticker("reconciler", s.reconcile_interval, self.reconcile_once, self.stopping)
            )
        # What start-up made (modules, models, schemas, statements, pools) lives as long as the process:
        # out of the collector's sight, a full collection does not walk it again (~100k objects, tens
        # of ms on the consumer's path every few seconds).
        gc.collect()
        gc.freeze()
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
