"""``POST /webhooks/sendgrid``, and the ingress's own app with ``/healthz`` and ``/readyz``.

A request is checked in this order, and refused at the first failure with
nothing recorded: HTTP basic auth when configured (401), the body size (413,
never buffered past the limit), SendGrid's signature and timestamp on the raw
body (403), the JSON (400 unless an array). Each event is then mapped to a
``DeliveryReport`` and the batch is made durable by the ``Forwarder`` (on the
bus with a publisher confirm); only then 200. A broker that does not take it
gives 503 with ``Retry-After``, so SendGrid posts the batch again later.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from emailer.adapters.webhooks.sendgrid import map_batch
from emailer.adapters.webhooks.sendgrid_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRejected,
    SignatureVerifier,
    parse_public_keys,
)
from emailer.config import ConfigError, Settings
from emailer.entrypoints.gateway.body import BodyTooLarge, read_capped
from emailer.entrypoints.gateway.errors import RETRY_AFTER_SECONDS
from emailer.entrypoints.ingress.auth import BasicAuth
from emailer.entrypoints.ingress.forwarding import Forwarder
from emailer.infrastructure import unavailable_dependency
from emailer.redaction import describe
from handlers.ports import Clock

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/sendgrid"
DRAIN_FACTOR = 4
"""A refused body is read (and dropped) up to this many times the limit, so the client sees the 413."""
UNVERIFIED_WARNING = (
    "SendGrid webhook signatures are NOT verified (EMAILER_SENDGRID_WEBHOOK_VERIFY=false): "
    "anyone who reaches the ingress can record delivery events"
)

NO_KEY_WARNING = (
    "no SendGrid verification key (EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS): every webhook is refused"
)


@dataclass(frozen=True)
class WebhookConfig:
    verifier: SignatureVerifier | None
    """None: verification is off (only by explicit setting)."""
    basic_auth: BasicAuth
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """The webhook's configuration; ``ConfigError`` naming the variable when it is unusable."""
        try:
            keys = parse_public_keys(settings.sendgrid_webhook_public_keys)
        except ValueError as exc:
            raise ConfigError(f"EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS: {exc}") from None
        credentials = settings.ingress_basic_auth.get_secret_value() if settings.ingress_basic_auth else None
        try:
            basic_auth = BasicAuth(credentials)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        tolerance = timedelta(seconds=settings.sendgrid_webhook_tolerance)
        verifier = SignatureVerifier(keys, tolerance) if settings.sendgrid_webhook_verify else None
        return cls(verifier, basic_auth, settings.ingress_max_body_bytes)

    def warnings(self) -> list[str]:
        if self.verifier is None:
            return [UNVERIFIED_WARNING]
        if not self.verifier.keys:
            return [NO_KEY_WARNING]
        return []


def webhook_router(config: WebhookConfig, forwarder: Forwarder, clock: Clock) -> APIRouter:
    router = APIRouter()

    @router.post(
        WEBHOOK_PATH,
        responses={
            400: {"description": "not a JSON array"},
            401: {"description": "basic auth failed"},
            403: {"description": "missing or bad signature, or a timestamp out of tolerance"},
            413: {"description": "body over EMAILER_INGRESS_MAX_BODY_BYTES"},
            503: {"description": "the bus did not take the batch; post it again later"},
        },
    )
    async def sendgrid_events(request: Request) -> JSONResponse:
        """SendGrid's Event Webhook: answered 200 once the batch is on the bus."""
        if not config.basic_auth.allows(request.headers.get("authorization")):
            await _drain(request, config.max_body_bytes * DRAIN_FACTOR)
            return _error(401, "basic auth required", {"WWW-Authenticate": 'Basic realm="emailer-ingress"'})
        try:
            raw = await read_capped(request, config.max_body_bytes)
        except BodyTooLarge:
            await _drain(request, config.max_body_bytes * DRAIN_FACTOR)
            return _error(413, f"the body is larger than {config.max_body_bytes} bytes")
        except ClientDisconnect:
            return _error(400, "the client went away before the body was read")
        signature, timestamp = request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER)
        return await run_in_threadpool(_accept, config, forwarder, clock, raw, signature, timestamp)

    return router


def _accept(
    config: WebhookConfig,
    forwarder: Forwarder,
    clock: Clock,
    raw: bytes,
    signature: str | None,
    timestamp: str | None,
) -> JSONResponse:
    now = clock.now()
    if config.verifier is not None:
        try:
            config.verifier.verify(raw, signature, timestamp, now)
        except SignatureRejected as exc:
            log.warning("ingress.signature_rejected", reason=str(exc))
            return _error(403, str(exc))
    try:
        events = json.loads(raw)
    except (ValueError, RecursionError):
        return _error(400, "the body is not valid JSON")
    if not isinstance(events, list):
        return _error(400, "the body must be a JSON array of events")
    batch = map_batch(events, now)
    if batch.not_ours or batch.unreadable or batch.unknown_types:
        log.info(
            "ingress.events_skipped",
            not_ours=batch.not_ours,
            unreadable=batch.unreadable,
            unknown_types=sorted(batch.unknown_types),
        )
    if batch.reports:
        try:
            forwarder.forward(batch.reports, now)
        except Exception as exc:  # noqa: BLE001 - any failure: not durable, so never 2xx
            dependency = unavailable_dependency(exc) or "bus"
            log.warning("ingress.not_forwarded", dependency=dependency, error=describe(exc))
            return _error(
                503,
                f"the {dependency} did not take the batch; nothing was recorded, post it again",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    body = {
        "received": len(events),
        "recorded": len(batch.reports),
        "not_ours": batch.not_ours,
        "unreadable": batch.unreadable,
    }
    return JSONResponse(body, status_code=200)


def create_ingress_app(
    config: WebhookConfig, forwarder: Forwarder, clock: Clock, bus_ready: Callable[[], bool]
) -> FastAPI:
    """The ingress on its own (``emailer ingress``): the webhook, ``/healthz`` and ``/readyz``."""
    api = FastAPI(title="Emailer webhook ingress", version="1", summary="Provider callbacks onto the bus.")
    api.include_router(webhook_router(config, forwarder, clock))

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "the bus is not answering"}})
    async def readyz() -> JSONResponse:
        """Ready when the bus answers; warns when signatures are not verified."""
        checks = {"bus": await run_in_threadpool(bus_ready)}
        ready = all(checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if warnings := config.warnings():
            body["warnings"] = warnings
        return JSONResponse(body, status_code=200 if ready else 503)

    return api


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _drain(request: Request, bound: int) -> None:
    """Read and drop the rest of the body (up to ``bound``), so the client reads our answer."""
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > bound:
                return
    except (ClientDisconnect, RuntimeError):
        return
