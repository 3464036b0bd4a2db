"""Build the object graph from settings, at run time (nothing is wired at import time)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from contracts import CancelEmail, DispatchEmail, RecordDeliveryReports, SendEmail
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.config import Settings
from emailer.domain import RetryPolicy
from emailer.endpoint.faults import AFTER_PROVIDER_CALL_BEFORE_COMMIT, crash_point
from emailer.endpoint.pipeline import MessagePipeline
from emailer.endpoint.registry import Registry, Route
from handlers import record_delivery_reports as record_delivery_reports_module
from handlers import send_email as send_email_module
from handlers.cancel_email import cancel_email
from handlers.dispatch_email import dispatch_email
from handlers.ports import BlobStore, Clock, Provider, lookup_of
from handlers.record_delivery_reports import record_delivery_reports
from handlers.send_email import send_email
from handlers.unit_of_work import AbstractUnitOfWork

if TYPE_CHECKING:
    from emailer.adapters.bus import Delivery, KombuBus
    from emailer.adapters.persistence.outbox import Outbox


@dataclass
class App:
    settings: Settings
    engine: Engine
    bus: KombuBus
    blobs: BlobStore
    provider: Provider
    clock: Clock
    policy: RetryPolicy
    registry: Registry
    outbox: Outbox
    pipeline: MessagePipeline[Delivery]

    def new_uow(self) -> AbstractUnitOfWork:
        from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork

        return SqlUnitOfWork(self.engine, self.clock, self.settings.input_queue)

    def close(self) -> None:
        self.pipeline.close()
        self.bus.close()
        self.engine.dispose()


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "local":
        from emailer.adapters.blobstore.local import LocalBlobStore

        return LocalBlobStore(settings.effective_blob_dir)
    raise NotImplementedError("the S3 / MinIO blob store comes with the attachments work")


def build_provider(settings: Settings, clock: Clock) -> Provider:
    """The configured provider, guarded by a circuit breaker."""
    return guard_provider(build_real_provider(settings), settings, clock)


def guard_provider(provider: Provider, settings: Settings, clock: Clock) -> Provider:
    """``provider`` behind a circuit breaker (EMAILER_CIRCUIT_*): handlers never see the breaker."""
    return CircuitBreaker(
        provider, clock, settings.circuit_threshold, timedelta(seconds=settings.circuit_cooldown)
    )


def build_real_provider(settings: Settings) -> Provider:
    if settings.provider == "sendgrid":
        from emailer.adapters.providers.sendgrid import SendGridProvider

        assert settings.sendgrid_api_key is not None  # checked by Settings
        return SendGridProvider(
            api_key=settings.sendgrid_api_key.get_secret_value(),
            base_url=settings.sendgrid_base_url,
            timeout=settings.sendgrid_timeout,
            activity_lookup=settings.reconcile_lookup,
        )
    from emailer.adapters.providers.file import FileProvider

    return FileProvider(settings.effective_mail_dir)


def build_bus(settings: Settings) -> KombuBus:
    from emailer.adapters.bus import KombuBus, Topology

    topology = Topology(
        input_queue=settings.input_queue,
        events_exchange=settings.events_exchange,
        error_queue=settings.error_queue,
    )
    return KombuBus(settings.bus_url, topology)


def bootstrap(
    settings: Settings,
    *,
    engine: Engine | None = None,
    bus: KombuBus | None = None,
    provider: Provider | None = None,
    blobs: BlobStore | None = None,
    clock: Clock | None = None,
) -> App:
    from emailer.adapters.clock import SystemClock
    from emailer.adapters.persistence.engine import make_engine
    from emailer.adapters.persistence.outbox import Outbox

    engine = engine or make_engine(settings.effective_database_url)
    bus = bus or build_bus(settings)
    blobs = blobs or build_blob_store(settings)
    clock = clock or SystemClock()
    provider = guard_provider(provider or build_real_provider(settings), settings, clock)
    policy = settings.retry_policy()
    if policy.resend_needs_lookup and lookup_of(provider) is None:
        # The file provider can always answer; only a provider without the capability gets here.
        policy = replace(policy, resend_needs_lookup=False)
    crash_at = settings.crash_at

    def after_call() -> None:
        crash_point(AFTER_PROVIDER_CALL_BEFORE_COMMIT, crash_at)

    outbox = Outbox(engine, bus, clock)
    registry = Registry(
        [
            Route(
                SendEmail,
                lambda m, uow: send_email(m, uow, blobs, clock, policy),
                prefetch=send_email_module.prefetch,
            ),
            Route(CancelEmail, lambda m, uow: cancel_email(m, uow, clock)),
            Route(
                RecordDeliveryReports,
                lambda m, uow: record_delivery_reports(m, uow, clock),
                prefetch=record_delivery_reports_module.prefetch,
            ),
            Route(
                DispatchEmail,
                lambda m, uow: dispatch_email(m, uow, blobs, provider, clock, policy, after_call),
                transactional=False,
            ),
        ]
    )
    app = App(
        settings=settings,
        engine=engine,
        bus=bus,
        blobs=blobs,
        provider=provider,
        clock=clock,
        policy=policy,
        registry=registry,
        outbox=outbox,
        pipeline=MessagePipeline(
            registry,
            lambda: app.new_uow(),
            outbox,
            bus,
            settings.crash_at,
            concurrency=settings.dispatch_concurrency,
        ),
    )
    return app
