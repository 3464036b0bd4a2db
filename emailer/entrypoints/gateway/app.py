"""The gateway's FastAPI application.

``POST /v1/emails`` answers 202 only once the command is durable: with the
embedded in-memory bus it is handled in this process and committed first;
with RabbitMQ it is on the broker with a publisher confirm. The body is read
within ``EMAILER_GATEWAY_MAX_BODY_BYTES`` and decoded exactly as the worker
decodes a message (``body.py``); a dependency that does not answer gives 503
with ``Retry-After`` (``errors.py``); API tokens lock it (``auth.py``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from contracts import SendEmail
from contracts.wire import ENDPOINT, H
from emailer.bootstrap import App
from emailer.entrypoints.gateway import errors
from emailer.entrypoints.gateway.auth import TokenCheck, parse_tokens
from emailer.entrypoints.gateway.body import BodyTooLarge, InvalidBody, decode, read_capped
from emailer.entrypoints.gateway.openapi import ERROR_RESPONSES, install_request_schema
from emailer.entrypoints.gateway.suppressions import suppressions_router
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext
from handlers.unit_of_work import outgoing

HTTP_COMMAND_NAMESPACE = uuid.UUID("0b6f9f43-2c59-4a51-8d6f-4f3c1f7a8e21")
EMAIL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def http_message_id(email_id: str) -> str:
    """The same email id posted twice is the same message: the inbox dedupes it too."""
    return str(uuid.uuid5(HTTP_COMMAND_NAMESPACE, email_id))


class Accepted(BaseModel):
    email_id: str
    accepted: bool
    status_url: str


def create_app(app: App) -> FastAPI:
    api = FastAPI(
        title="Emailer",
        version="1",
        summary="Send email; read its state and timeline.",
    )
    tokens = TokenCheck(
        parse_tokens(app.settings.api_tokens.get_secret_value() if app.settings.api_tokens else None)
    )
    errors.install(api)

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
        message_id = http_message_id(command.email_id)
        headers = {H.CORRELATION_ID: request.headers.get("X-Correlation-Id") or message_id}
        try:
            await run_in_threadpool(_accept, app, command, MessageContext(message_id, "SendEmail", headers))
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

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "a dependency is not answering"}})
    async def readyz() -> JSONResponse:
        """Ready when the database and the bus answer."""
        checks = {
            "database": await run_in_threadpool(_db_ok, app),
            "bus": await run_in_threadpool(app.bus.ping),
        }
        ready = all(checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if not tokens.enabled:
            body["warnings"] = ["no API tokens: anyone who reaches the gateway may send and read"]
        return JSONResponse(body, status_code=200 if ready else 503)

    api.include_router(suppressions_router(app, tokens))
    install_request_schema(api, {"SendEmail": SendEmail})
    return api


def _accept(app: App, command: SendEmail, context: MessageContext) -> None:
    """Make the command durable: committed here (embedded bus) or confirmed by the broker."""
    try:
        if app.settings.embedded_bus:
            app.pipeline.handle_local(command, context)
            return
        message = outgoing(
            command,
            MessageContext(context.message_id, "HttpRequest", context.headers),
            message_id=context.message_id,
            now=app.clock.now(),
            reply_to=ENDPOINT,
            destination=app.settings.input_queue,
        )
        app.bus.publish([message])  # no outbox row: durable once the broker confirmed it (then 202)
    except InvalidMessage:
        raise
    except Exception as exc:
        dependency = errors.unavailable_dependency(exc)
        if dependency is None:
            raise
        raise errors.DependencyUnavailable(dependency, exc) from exc


def _db_ok(app: App) -> bool:
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
