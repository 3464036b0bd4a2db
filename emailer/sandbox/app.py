"""The sandbox's HTTP face: SendGrid's ``POST /v3/mail/send`` and a control API under ``/sandbox/``.

``POST /v3/mail/send`` goes straight to its own ASGI handler (``mail_send.py``:
SendGrid's checks and answers, the Event Webhook hand-off), the hot path of
every benchmark; everything else is a FastAPI application:

- ``GET /v3/messages``, SendGrid's Email Activity Feed over the accepted
  requests (``activity.py``): what a reconciling client asks before a resend;
- the control API under ``/sandbox/`` (the sandbox's own key): the accepted
  requests, the counters, the failure mode, the webhook's mode;
- ``/healthz``.

Event Webhook: when the sandbox has a ``WebhookSender`` (a URL to post to,
``SandboxState.webhook_url``), every accepted request's events, chosen by the
recipients' addresses (``scenarios.py``), are handed to it right after the 202
is decided; it posts them in signed batches (``webhooks.py``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emailer.sandbox.activity import QueryError, feed_entries, parse_query, public
from emailer.sandbox.errors import UNAUTHORIZED, ApiError, api_error
from emailer.sandbox.mail_send import (
    OPENAPI,
    PATH,
    MailSend,
    Receive,
    Scope,
    Send,
    authorized,
    bearer_token,
    errors,
)
from emailer.sandbox.state import FailureMode, Mode, SandboxState
from emailer.sandbox.webhooks import WebhookMode, WebhookSender


class ModeSettings(BaseModel):
    """Body of ``PUT /sandbox/mode``; settings left out take their defaults."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode
    retry_after: int = Field(default=60, ge=0, description="seconds, for rate_limit")
    delay: float = Field(default=0.0, ge=0, le=3600, description="seconds, for slow")
    status: int = Field(default=500, ge=500, le=599, description="HTTP status, for error")
    reason: str = Field(
        default="The sandbox was told to reject every send.", max_length=500, description="for reject"
    )


class WebhookModeSettings(BaseModel):
    """Body of ``PUT /sandbox/webhook``."""

    model_config = ConfigDict(extra="forbid")

    mode: WebhookMode


class SandboxApp:
    """The sandbox as one ASGI application: Mail Send to its handler, the rest to FastAPI."""

    def __init__(self, mail_send: MailSend, api: FastAPI) -> None:
        self.mail_send = mail_send
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.mail_send(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(state: SandboxState, api_key: str | None, webhooks: WebhookSender | None = None) -> SandboxApp:
    """The sandbox application. With ``api_key`` None, any bearer token starting ``SG.`` passes.

    With ``webhooks``, accepted requests' events are posted to its URL.
    """
    api = control_api(state, api_key, webhooks)
    _document_mail_send(api)
    return SandboxApp(MailSend(state, api_key, webhooks), api)


def _document_mail_send(api: FastAPI) -> None:
    """``/docs`` lists Mail Send with the rest, though it is served beside the application."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schema["paths"].setdefault(PATH, OPENAPI)
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def control_api(state: SandboxState, api_key: str | None, webhooks: WebhookSender | None) -> FastAPI:
    """Everything but Mail Send: the Email Activity Feed, the control API, ``/healthz``."""
    app = FastAPI(
        title="Emailer SendGrid sandbox",
        summary="SendGrid's v3 mail send as SendGrid checks and answers it, and a control API for tests",
        redoc_url=None,
    )

    def require_key(request: Request) -> None:
        """The control API (read-back, modes, stats) answers only to the sandbox's own key."""
        token = _bearer_token(request)
        if token is None or not authorized(token, api_key):
            raise HTTPException(HTTPStatus.UNAUTHORIZED, detail="the sandbox's API key is required")

    control = Depends(require_key)

    @app.get("/v3/messages")
    def activity_feed(request: Request, query: str = "", limit: int = 10) -> Response:
        """SendGrid's Email Activity Feed ("Filter all messages"), over the accepted requests."""
        token = _bearer_token(request)
        if token is None or not authorized(token, api_key):
            return _error_response(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED)
        if not 1 <= limit <= 1000:
            problem = api_error("limit must be between 1 and 1000", "limit")
            return _error_response(HTTPStatus.BAD_REQUEST, problem)
        try:
            matches = parse_query(query)
        except QueryError as exc:
            return _error_response(HTTPStatus.BAD_REQUEST, api_error(f"invalid query: {exc}", "query"))
        found: list[dict[str, Any]] = []
        for accepted in reversed(state.messages()):  # newest first, as SendGrid lists them
            received = accepted.received_at.isoformat().replace("+00:00", "Z")
            entries = feed_entries(accepted.message_id, received, accepted.body)
            found.extend(public(e) for e in entries if matches(e))
            if len(found) >= limit:
                break
        return JSONResponse({"messages": found[:limit]})

    @app.get("/sandbox/messages", dependencies=[control])
    def list_messages(email_id: str | None = None) -> list[dict[str, Any]]:
        """Accepted requests, oldest first (``email_id``: only those whose custom args carry it)."""
        return [request.to_dict() for request in state.messages(email_id)]

    @app.delete("/sandbox/messages", status_code=HTTPStatus.NO_CONTENT, dependencies=[control])
    def reset() -> Response:
        """Forget accepted requests and zero the counters (the mode stays)."""
        state.reset()
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @app.put("/sandbox/mode", dependencies=[control])
    def put_mode(settings: ModeSettings) -> dict[str, Any]:
        """How sends are answered: normal, outage (503), rate_limit (429), slow, error (5xx), reject (400)."""
        failure = FailureMode(**settings.model_dump())
        state.set_failure(failure)
        return failure.to_dict()

    @app.get("/sandbox/mode", dependencies=[control])
    def get_mode() -> dict[str, Any]:
        return state.failure.to_dict()

    @app.get("/sandbox/webhook", dependencies=[control])
    def get_webhook() -> dict[str, Any]:
        """Where events are posted, the public key (SendGrid's format), counters and mode."""
        if webhooks is None:
            raise HTTPException(HTTPStatus.NOT_FOUND, detail="no webhook URL is configured")
        return webhooks.stats()

    @app.put("/sandbox/webhook", dependencies=[control])
    def put_webhook(settings: WebhookModeSettings) -> dict[str, Any]:
        """Duplicates and reordering on request: normal, duplicate, shuffle, duplicate-shuffle."""
        if webhooks is None:
            raise HTTPException(HTTPStatus.NOT_FOUND, detail="no webhook URL is configured")
        webhooks.set_mode(settings.mode)
        return webhooks.stats()

    @app.get("/sandbox/requests", dependencies=[control])
    def requests() -> list[dict[str, Any]]:
        """Every mail send as answered: ``at`` (unix time it arrived), ``status``, ``retry_after``."""
        return state.answers()

    @app.get("/sandbox/stats", dependencies=[control])
    def stats() -> dict[str, int]:
        """Counters: requests received and accepted."""
        return state.stats()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _bearer_token(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization", ""))


def _error_response(status: HTTPStatus, problem: ApiError) -> Response:
    code, headers, body = errors(status, problem)
    return Response(body, status_code=code, media_type="application/json")
