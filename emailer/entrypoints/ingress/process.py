"""Wiring the ingress: alone (``emailer ingress``: a bus, no database) or inside ``emailer run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import APIRouter, FastAPI

from emailer.bootstrap import build_bus, build_signer
from emailer.config import Settings
from emailer.entrypoints.ingress.app import WebhookConfig, create_ingress_app, webhook_router
from emailer.entrypoints.ingress.forwarding import BusForwarder, LocalForwarder

if TYPE_CHECKING:
    from emailer.adapters.bus import KombuBus
    from emailer.bootstrap import App

log = structlog.get_logger(__name__)


def standalone_app(settings: Settings, bus: KombuBus) -> FastAPI:
    """The ingress app over ``bus`` (connected by the caller). ``ConfigError`` if it cannot verify."""
    from emailer.adapters.clock import SystemClock
    from emailer.config import ConfigError

    if settings.embedded_bus:
        raise ConfigError(
            "EMAILER_BUS_URL: `emailer ingress` needs a shared broker (amqp://); "
            "the in-memory bus is only for `emailer run`, which mounts the ingress itself"
        )
    config = WebhookConfig.from_settings(settings)
    if config.verifier is not None and not config.verifier.keys:
        raise ConfigError(
            "EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS: required (SendGrid's verification key, base64); "
            "or set EMAILER_SENDGRID_WEBHOOK_VERIFY=false to accept unsigned webhooks"
        )
    for warning in config.warnings():
        log.warning("ingress.unsafe", warning=warning)
    forwarder = BusForwarder(bus, settings.input_queue, build_signer(settings))
    return create_ingress_app(config, forwarder, SystemClock(), bus.ping)


def serve(settings: Settings) -> None:
    """``emailer ingress``: serve until interrupted."""
    from emailer.entrypoints import serving

    sock = serving.bind(settings.ingress_host, settings.ingress_port)
    bus = build_bus(settings)
    try:
        app = standalone_app(settings, bus)
        bus.connect()
        banner = f"ingress listening on {serving.url(sock)} (POST /webhooks/sendgrid) to {bus.safe_url}"
        serving.serve(app, sock, lambda: print(banner, flush=True))
    finally:
        sock.close()
        bus.close()


def mounted_router(app: App) -> APIRouter:
    """The webhook for ``emailer run``'s gateway: on the embedded bus it is committed in process."""
    config = WebhookConfig.from_settings(app.settings)
    for warning in config.warnings():
        log.warning("ingress.unsafe", warning=warning)
    forwarder = (
        LocalForwarder(app.pipeline.handle_local)
        if app.settings.embedded_bus
        else (BusForwarder(app.bus, app.settings.input_queue, app.signer))
    )
    return webhook_router(config, forwarder, app.clock)
