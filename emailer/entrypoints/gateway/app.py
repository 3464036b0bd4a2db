"""The gateway's FastAPI application.

``POST /v1/emails`` answers 202 only once the command is durable: with the
embedded in-memory bus it is handled in this process and committed first;
with RabbitMQ it is on the broker with a publisher confirm. The body is read
within ``EMAILER_GATEWAY_MAX_BODY_BYTES`` and decoded exactly as the worker
decodes a message (``body.py``); a dependency that does not answer gives 503
with ``Retry-After`` (``errors.py``), and so does a broker that does not
confirm within ``EMAILER_GATEWAY_PUBLISH_TIMEOUT``; API tokens lock it
(``auth.py``). Given ``Dependencies`` (``emailer gateway`` does), it serves
before its database and broker answer (``dependencies.py``).

An email id names one email. Re-posting the same command answers 202 again and
sends nothing new; posting another content under a stored email id answers 409.
Embedded, the handler decides inside the commit. With RabbitMQ the gateway looks
the email up first (409 if it is stored with another content, 202 without
publishing if with the same); the worker's handler stays the judge of what the
gateway could not see: a conflicting command posted while the first one is
still on its way (or while the database does not answer the lookup) gets 202
and is then moved to the ``error`` queue with the reason, and the first email
stands. The lookup cannot close that window (nothing is stored before the
worker commits); it answers every conflict it can see with 409.
"""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import anyio
import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from contracts import SendEmail
from contracts.wire import ENDPOINT, H
from emailer.adapters.providers.gate import ProviderState
from emailer.bootstrap import App, asyncapi, attachment_limits
from emailer.domain import EmailIdReused
from emailer.entrypoints.gateway import errors
from emailer.entrypoints.gateway.attachments import attachments_router
from emailer.entrypoints.gateway.auth import TokenCheck, parse_tokens
from emailer.entrypoints.gateway.body import BodyTooLarge, InvalidBody, decode, read_capped
from emailer.entrypoints.gateway.dependencies import BROKER, DATABASE, Dependencies
from emailer.entrypoints.gateway.events import events_router
from emailer.entrypoints.gateway.openapi import CANCEL_RESPONSES, ERROR_RESPONSES, install_request_schema
from emailer.entrypoints.gateway.suppressions import suppressions_router
from emailer.infrastructure import unavailable_dependency
from emailer.redaction import describe
from emailer.retries import conflict_retrying
from handlers.attachments import EmailTooLarge, claim_checked
from handlers.cancel_email import CancelResult, cancel
from handlers.errors import ConcurrencyConflict, InvalidMessage
from handlers.ports import BlobStoreUnavailable, MessageContext
from handlers.send_email import content_hash
from handlers.unit_of_work import outgoing

log = structlog.get_logger(__name__)

HTTP_COMMAND_NAMESPACE = uuid.UUID("0b6f9f43-2c59-4a51-8d6f-4f3c1f7a8e21")
EMAIL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def http_message_id(email_id: str, content_hash: str) -> str:
    """The same command posted twice is the same message (the inbox dedupes it too).

    The content hash is part of it: another content under the same email id is
    another message, which the handler sees and refuses (409, or the error queue).
    """
    return str(uuid.uuid5(HTTP_COMMAND_NAMESPACE, f"{email_id}/{content_hash}"))


class Accepted(BaseModel):
    email_id: str
    accepted: bool
    status_url: str


class Cancelled(BaseModel):
    email_id: str
    cancelled: bool
    status: str


def create_app(app: App, dependencies: Dependencies | None = None) -> FastAPI:
    """The API over ``app``. Without ``dependencies`` the caller has connected the bus already."""
    api = FastAPI(
        title="Emailer",
        version="1",
        summary="Send email; read its state and timeline.",
    )
    tokens = TokenCheck(
        parse_tokens(app.settings.api_tokens.get_secret_value() if app.settings.api_tokens else None)
    )
    errors.install(api)
    api.state.stopping = threading.Event()  # set when the server stops: event streams end
    asyncapi_cache: list[dict[str, Any]] = []

    @api.post(
        "/v1/emails",
        status_code=202,
        response_model=Accepted,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(tokens.require("send"))],
        openapi_extra={"x-request-model": "SendEmail"},
    )
    async def send(request: Request, response: Response) -> Accepted | JSONResponse:
        """Accept a SendEmail. Re-posting the same ``email_id`` answers the same and sends nothing new."""
        try:
            command = decode(SendEmail, await read_capped(request, app.settings.gateway_max_body_bytes))
        except BodyTooLarge as exc:
            return JSONResponse({"error": str(exc), "limit": exc.limit}, status_code=413)
        except InvalidBody as exc:
            return JSONResponse({"error": "invalid SendEmail", "detail": exc.errors}, status_code=422)
        message_id = http_message_id(command.email_id, content_hash(command))
        headers = {H.CORRELATION_ID: request.headers.get("X-Correlation-Id") or message_id}
        context = MessageContext(message_id, "SendEmail", headers)
        try:
            if app.settings.embedded_bus:
                await run_in_threadpool(_accept, app, command, context)
            else:
                await _publish_in_time(app, dependencies, command, context)
        except EmailTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except EmailIdReused as exc:
            return JSONResponse({"error": str(exc), "email_id": exc.email_id}, status_code=409)
        except InvalidMessage as exc:
            detail = [{"field": "body", "rule": "invalid", "message": str(exc)}]
            return JSONResponse({"error": "invalid SendEmail", "detail": detail}, status_code=422)
        location = f"/v1/emails/{command.email_id}"
        response.headers["Location"] = location
        return Accepted(email_id=command.email_id, accepted=True, status_url=location)

    @api.get(
        "/v1/emails/{email_id}",
        responses={k: v for k, v in ERROR_RESPONSES.items() if k in (401, 404, 503)},
        dependencies=[Depends(tokens.require("read"))],
    )
    async def status(email_id: str) -> Any:
        """The email's state, per-recipient state and timeline."""
        from emailer.adapters.persistence.queries import email_view

        if not EMAIL_ID.fullmatch(email_id):  # no such email can exist; spare the database the lookup
            return JSONResponse({"error": f"no email {email_id[:140]!r}"}, status_code=404)
        view = await run_in_threadpool(email_view, app.engine, email_id)
        if view is None:
            return JSONResponse({"error": f"no email {email_id!r}"}, status_code=404)
        return view

    @api.delete(
        "/v1/emails/{email_id}",
        response_model=Cancelled,
        responses=CANCEL_RESPONSES,
        dependencies=[Depends(tokens.require("send"))],
    )
    async def cancel_email(email_id: str, request: Request) -> Cancelled | JSONResponse:
        """Cancel an email the provider does not have yet: 200 when it took effect (``EmailCancelled`` is
        published; cancelling again answers the same), 409 with its state when it came too late."""
        if not EMAIL_ID.fullmatch(email_id):
            return JSONResponse({"error": f"no email {email_id[:140]!r}"}, status_code=404)
        correlation = request.headers.get("X-Correlation-Id")
        result = await run_in_threadpool(cancel_now, app, email_id, correlation)
        if result.outcome == "unknown":
            return JSONResponse({"error": f"no email {email_id!r}"}, status_code=404)
        if not result.cancelled:
            return JSONResponse(
                {
                    "error": f"too late to cancel: the email is {result.status}",
                    "email_id": email_id,
                    "cancelled": False,
                    "status": result.status,
                },
                status_code=409,
            )
        return Cancelled(email_id=email_id, cancelled=True, status=str(result.status))

    @api.get("/asyncapi.json", summary="The AsyncAPI 3.0 document of the bus")
    async def asyncapi_json() -> dict[str, Any]:
        """Queues, exchanges, routing keys, headers and payload schemas of the bus, as configured."""
        if not asyncapi_cache:
            asyncapi_cache.append(asyncapi(app.settings))
        return asyncapi_cache[0]

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "a dependency is not answering"}})
    async def readyz() -> JSONResponse:
        """Ready when the database (at the schema's head) and the bus answer; ``missing`` says why not."""
        missing = dependencies.missing() if dependencies is not None else {}
        if DATABASE not in missing and not await run_in_threadpool(_db_ok, app):
            missing[DATABASE] = "not answering"
        if BROKER not in missing and not await run_in_threadpool(app.bus.ping):
            missing[BROKER] = "not answering"
        providers = await run_in_threadpool(_provider_states, app) if DATABASE not in missing else []
        for state in providers:
            if state.misconfigured:
                since = state.paused_at.isoformat() if state.paused_at else "?"
                missing[f"provider {state.provider}"] = (
                    f"{state.detail} (since {since}); dispatch stopped, emails wait and none fail"
                )
        checks = {"database": DATABASE not in missing, "bus": BROKER not in missing}
        checks.update({f"provider {p.provider}": not p.misconfigured for p in providers})
        ready = not missing
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        now = app.clock.now()
        paused = {p.provider: str(p.paused_until) for p in providers if p.is_paused(now)}
        if paused:
            body["provider_paused_until"] = paused
        if missing:
            body["missing"] = missing
        if not tokens.enabled:
            body["warnings"] = ["no API tokens: anyone who reaches the gateway may send and read"]
        return JSONResponse(body, status_code=200 if ready else 503)

    api.include_router(attachments_router(app, tokens.require("send")))
    api.include_router(suppressions_router(app, tokens))
    api.include_router(events_router(app, tokens.require("read"), api.state.stopping))
    install_request_schema(api, {"SendEmail": SendEmail})
    return api


async def _publish_in_time(
    app: App, dependencies: Dependencies | None, command: SendEmail, context: MessageContext
) -> None:
    """Publish the command with a confirm within ``gateway_publish_timeout``, else 503.

    A publish that timed out is left to finish in its thread (it is bounded by
    the bus's own connect and confirm timeouts); if it lands after all, the
    client's retry of the same ``email_id`` is deduplicated by the inbox.
    """
    if dependencies is not None and not dependencies.broker_connected:
        raise errors.DependencyUnavailable(BROKER, ConnectionError("not connected yet"))
    timeout = app.settings.gateway_publish_timeout
    try:
        with anyio.fail_after(timeout):
            await anyio.to_thread.run_sync(_accept, app, command, context, abandon_on_cancel=True)
    except TimeoutError:
        raise errors.DependencyUnavailable(
            BROKER,
            TimeoutError(f"no publisher confirm within {timeout:g}s"),
            outcome="the command may or may not be on the bus; retry the same request (same email_id)",
        ) from None


def _accept(app: App, command: SendEmail, context: MessageContext) -> None:
    """Make the command durable: committed here (embedded bus) or confirmed by the broker."""
    try:
        if app.settings.embedded_bus:
            app.pipeline.handle_local(command, context)
            return
        if _stored_alike(app, command):
            return  # stored already, with this content: nothing to publish
        command = claim_checked(command, app.blobs, attachment_limits(app.settings))
        message = outgoing(
            command,
            MessageContext(context.message_id, "HttpRequest", context.headers),
            message_id=context.message_id,
            now=app.clock.now(),
            reply_to=ENDPOINT,
            destination=app.settings.input_queue,
        )
        app.bus.publish([message])  # no outbox row: durable once the broker confirmed it (then 202)
    except (InvalidMessage, EmailIdReused):
        raise
    except BlobStoreUnavailable as exc:
        raise errors.DependencyUnavailable("object store", exc) from exc
    except Exception as exc:
        dependency = unavailable_dependency(exc)
        if dependency is None:
            raise
        raise errors.DependencyUnavailable(dependency, exc) from exc


def _stored_alike(app: App, command: SendEmail) -> bool:
    """True if the email is stored with this content; ``EmailIdReused`` if with another; else False.

    A database that does not answer decides nothing here: the command is published
    and the worker's handler decides (see the module docstring).
    """
    try:
        with app.new_uow() as uow:
            email = uow.emails.get(command.email_id)
    except Exception as exc:
        if unavailable_dependency(exc) != "database":
            raise
        log.warning("gateway.duplicate_check_skipped", email_id=command.email_id, error=describe(exc))
        return False
    if email is None:
        return False
    email.check_resend(content_hash(command))
    return True


def cancel_now(app: App, email_id: str, correlation_id: str | None) -> CancelResult:
    """Cancel in the database now (the answer must say whether it took effect); the outbox then
    publishes ``EmailCancelled`` (or the worker's sweep does, if the broker is away)."""
    headers = {H.CORRELATION_ID: correlation_id} if correlation_id else {}
    context = MessageContext(str(uuid.uuid4()), "CancelEmail", headers)
    uow = app.new_uow()
    for attempt in conflict_retrying(ConcurrencyConflict):  # a dispatch starting at the same moment
        with attempt, uow:
            uow.context = context
            result = cancel(email_id, None, uow, app.clock)
            uow.commit()
    app.outbox.publish_committed(uow.take_committed())
    return result


def _provider_states(app: App) -> list[ProviderState]:
    try:
        return app.provider_state.read_all()
    except Exception:  # noqa: BLE001 - the database check says so already
        return []


def _db_ok(app: App) -> bool:
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
