"""Build the object graph from settings, at run time (nothing is wired at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from contracts import CancelEmail, DispatchEmail, RecordDeliveryReports, SendEmail
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.adapters.providers.gate import DrainRate, ProviderGate, ProviderStateStore
from emailer.config import Settings
from emailer.domain import RetryPolicy
from emailer.endpoint import trusted
from emailer.endpoint.faults import AFTER_PROVIDER_CALL_BEFORE_COMMIT, crash_point
from emailer.endpoint.pipeline import MessagePipeline
from emailer.endpoint.recent import RecentEmails
from emailer.endpoint.recoverability import RecoverabilityPolicy
from emailer.endpoint.registry import Registry, Route, qualified_name
from emailer.signing import Signer
from handlers import record_delivery_reports as record_delivery_reports_module
from handlers import send_email as send_email_module
from handlers.attachments import AttachmentLimits
from handlers.cancel_email import cancel_email
from handlers.dispatch_email import dispatch_email, dispatch_messages
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
    provider: ProviderGate
    clock: Clock
    policy: RetryPolicy
    registry: Registry
    outbox: Outbox
    pipeline: MessagePipeline[Delivery]
    signer: Signer
    """Signs what Emailer sends itself and verifies internal commands (``emailer.signing``)."""
    provider_state: ProviderStateStore
    """The providers' shared state (pauses, configuration errors, drain rate): ``providers/gate.py``."""
    recent: RecentEmails = field(default_factory=RecentEmails)
    """The accept's emails, kept for the claim of their dispatch (``endpoint/recent.py``)."""

    def new_uow(self) -> AbstractUnitOfWork:
        from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork

        return SqlUnitOfWork(self.engine, self.clock, self.settings.input_queue, signer=self.signer)

    def close(self) -> None:
        self.pipeline.close()
        self.provider.close()
        self.bus.close()
        self.engine.dispose()


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "local":
        from emailer.adapters.blobstore.local import LocalBlobStore

        return LocalBlobStore(settings.effective_blob_dir)
    from emailer.adapters.blobstore.s3 import S3BlobStore

    store = S3BlobStore(
        settings.s3_endpoint,
        settings.s3_bucket,
        settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
        settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        region=settings.s3_region,
        secure=settings.s3_secure,
        prefix=settings.s3_prefix,
        part_size=settings.s3_part_size,
        timeout=settings.s3_timeout,
    )
    if settings.s3_create_bucket:
        store.ensure_bucket()
    return store


def attachment_limits(settings: Settings) -> AttachmentLimits:
    """What a SendEmail must keep to be accepted: the inline cap and the provider's size limit."""
    setting = f"EMAILER_{settings.provider.upper()}_MAX_EMAIL_BYTES"
    return AttachmentLimits(
        inline_max_bytes=settings.inline_attachments_max_bytes,
        max_email_bytes=settings.max_email_bytes,
        provider=f"the {settings.provider} provider ({setting})",
    )


def guard_provider(
    provider: Provider, settings: Settings, clock: Clock, store: ProviderStateStore
) -> ProviderGate:
    """``provider`` behind a circuit breaker (EMAILER_CIRCUIT_*, this worker) inside the provider gate
    (EMAILER_PROVIDER_*, every worker: pauses, configuration errors, drain rate). Handlers see neither."""
    breaker = CircuitBreaker(
        provider, clock, settings.circuit_threshold, timedelta(seconds=settings.circuit_cooldown)
    )
    return ProviderGate(
        breaker,
        store,
        clock,
        rate=drain_rate(settings),
        probe_wait=timedelta(seconds=settings.provider_probe_interval),
        rate_limit_pause=timedelta(seconds=settings.provider_rate_limit_pause),
        jitter=timedelta(seconds=settings.provider_pause_jitter),
        concurrency=settings.dispatch_concurrency,
    )


def drain_rate(settings: Settings) -> DrainRate:
    return DrainRate.of(settings.provider_max_rate)


def build_real_provider(settings: Settings) -> Provider:
    if settings.provider == "sendgrid":
        from emailer.adapters.providers.sendgrid import SendGridProvider

        assert settings.sendgrid_api_key is not None  # checked by Settings
        return SendGridProvider(
            api_key=settings.sendgrid_api_key.get_secret_value(),
            base_url=settings.sendgrid_base_url,
            timeout=settings.sendgrid_timeout,
            activity_lookup=settings.reconcile_lookup,
            connect_timeout=settings.sendgrid_connect_timeout,
            pool_size=settings.dispatch_concurrency,
            keepalive_expiry=settings.sendgrid_keepalive_expiry,
        )
    from emailer.adapters.providers.file import FileProvider

    return FileProvider(settings.effective_mail_dir)


def build_signer(settings: Settings) -> Signer:
    """EMAILER_INTERNAL_KEY; without it (allowed on the embedded bus only) one kept under var_dir."""
    if settings.internal_key is not None:
        return Signer.from_setting(settings.internal_key.get_secret_value())
    return Signer.kept_in(settings.var_dir / "internal.key")


def recoverability_policy(settings: Settings) -> RecoverabilityPolicy:
    """EMAILER_IMMEDIATE_RETRIES, EMAILER_DELAYED_RETRIES and EMAILER_DELAYED_RETRY_DELAYS."""
    return RecoverabilityPolicy(immediate_retries=settings.immediate_retries, delays=settings.retry_delays)


def build_bus(settings: Settings, **options: Any) -> KombuBus:
    """The bus; ``options`` go to ``KombuBus`` (the gateway's has short connect and confirm timeouts)."""
    from emailer.adapters.bus import KombuBus, Topology
    from emailer.adapters.bus.topologies import nservicebus_routes

    topology = Topology(
        input_queue=settings.input_queue,
        events_exchange=settings.events_exchange,
        error_queue=settings.error_queue,
        delays=settings.retry_delays,
    )
    options.setdefault("heartbeat", settings.broker_heartbeat)
    nservicebus = nservicebus_routes(settings.topology, settings.nsb_namespace, settings.input_queue)
    return KombuBus(settings.bus_url, topology, nservicebus=nservicebus, **options)


def asyncapi(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI document of the bus as ``settings`` configure it (names, topology, broker)."""
    from emailer.adapters.bus import Topology
    from emailer.adapters.bus.asyncapi import asyncapi_document
    from emailer.adapters.bus.topologies import nservicebus_routes

    topology = Topology(
        input_queue=settings.input_queue,
        events_exchange=settings.events_exchange,
        error_queue=settings.error_queue,
    )
    return asyncapi_document(
        topology,
        nservicebus=nservicebus_routes(settings.topology, settings.nsb_namespace, settings.input_queue),
        bus_url=settings.bus_url,
    )


def bootstrap(
    settings: Settings,
    *,
    engine: Engine | None = None,
    bus: KombuBus | None = None,
    provider: Provider | None = None,
    blobs: BlobStore | None = None,
    clock: Clock | None = None,
) -> App:
    from emailer.adapters.bus.delivery import ack_all
    from emailer.adapters.clock import SystemClock
    from emailer.adapters.persistence.engine import make_engine
    from emailer.adapters.persistence.outbox import Outbox
    from emailer.adapters.persistence.provider_state import SqlProviderState

    engine = engine or make_engine(settings.effective_database_url)
    bus = bus or build_bus(settings)
    blobs = blobs or build_blob_store(settings)
    clock = clock or SystemClock()
    provider_state = SqlProviderState(engine, clock.now)
    gate = guard_provider(provider or build_real_provider(settings), settings, clock, provider_state)
    policy = settings.retry_policy()
    limits = attachment_limits(settings)
    signer = build_signer(settings)
    if policy.resend_needs_lookup and lookup_of(gate) is None:
        # The file provider can always answer; only a provider without the capability gets here.
        policy = replace(policy, resend_needs_lookup=False)
    crash_at = settings.crash_at

    def after_call() -> None:
        crash_point(AFTER_PROVIDER_CALL_BEFORE_COMMIT, crash_at)

    outbox = Outbox(engine, bus, clock)
    recent = RecentEmails()
    registry = Registry(
        [
            Route(
                SendEmail,
                lambda m, uow: send_email(m, uow, blobs, clock, policy, limits),
                prefetch=send_email_module.prefetch,
                handler_name=qualified_name(send_email),
            ),
            Route(
                CancelEmail,
                lambda m, uow: cancel_email(m, uow, clock),
                handler_name=qualified_name(cancel_email),
            ),
            Route(
                RecordDeliveryReports,
                lambda m, uow: record_delivery_reports(m, uow, clock),
                prefetch=record_delivery_reports_module.prefetch,
                trusted_decoder=trusted.record_delivery_reports,
                handler_name=qualified_name(record_delivery_reports),
            ),
            Route(
                DispatchEmail,
                lambda m, uow: dispatch_email(m, uow, blobs, gate, clock, policy, after_call),
                transactional=False,
                batch=lambda items, uow: dispatch_messages(
                    items,
                    recent.offer(items, uow),  # the accept's emails, kept under a backlog
                    blobs,
                    gate,
                    clock,
                    policy,
                    after_call,
                    slice_size=settings.dispatch_slice,
                ),
                handler_name=qualified_name(dispatch_email),
            ),
        ]
    )
    app = App(
        settings=settings,
        engine=engine,
        bus=bus,
        blobs=blobs,
        provider=gate,
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
            signer=signer,
            recoverability=recoverability_policy(settings),
            fail_handling=settings.fail_handling,
            ack_all=ack_all,
        ),
        signer=signer,
        provider_state=provider_state,
        recent=recent,
    )
    return app
