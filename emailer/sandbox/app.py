"""The sandbox's HTTP face: SendGrid's ``POST /v3/mail/send`` and a control API under ``/sandbox/``.

``GET /v3/messages`` is SendGrid's Email Activity Feed over the accepted
requests (``activity.py``): what a reconciling client asks before a resend.

A mail send is checked in this order, answering as SendGrid does: the bearer
API key (401), the failure mode the sandbox was told to play (503, 429, a
delay, another 5xx), the size (413), the JSON (400), SendGrid's documented
rules (400). An accepted request answers 202 with an empty body and an
``X-Message-Id`` header, and is kept in ``SandboxState`` for the control API.

Event Webhook: when the sandbox has a ``WebhookSender`` (a URL to post to,
``SandboxState.webhook_url``), every accepted request's events, chosen by the
recipients' addresses (``scenarios.py``), are handed to it right after the 202
is decided; it posts them in signed batches (``webhooks.py``).

The API key is compared, never logged nor echoed; only its last four
characters are kept with an accepted request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from emailer.sandbox.activity import QueryError, feed_entries, parse_query, public
from emailer.sandbox.errors import (
    MAX_BODY_BYTES,
    UNAUTHORIZED,
    ApiError,
    api_error,
    error_body,
    payload_too_large_error,
    status_error,
)
from emailer.sandbox.rules import validate_mail_send
from emailer.sandbox.scenarios import events_for
from emailer.sandbox.state import FailureMode, Mode, SandboxState
from emailer.sandbox.webhooks import WebhookMode, WebhookSender

DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES
"""A refused body is still read (and dropped) up to this size, so the client sees the answer.

Answering before the body is read makes the server close a socket with unread
data, which resets the connection: the client would see a network error, not
the 401/413/429 SendGrid would have sent.
"""


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


def create_app(state: SandboxState, api_key: str | None, webhooks: WebhookSender | None = None) -> FastAPI:
    """The sandbox application. With ``api_key`` None, any bearer token starting ``SG.`` passes.

    With ``webhooks``, accepted requests' events are posted to its URL.
    """
    app = FastAPI(
        title="Emailer SendGrid sandbox",
        summary="SendGrid's v3 mail send as SendGrid checks and answers it, and a control API for tests",
        redoc_url=None,
    )

    def require_key(request: Request) -> None:
        """The control API (read-back, modes, stats) answers only to the sandbox's own key."""
        token = _bearer_token(request)
        if token is None or not _authorized(token, api_key):
            raise HTTPException(HTTPStatus.UNAUTHORIZED, detail="the sandbox's API key is required")

    control = Depends(require_key)

    @app.post("/v3/mail/send")
    async def mail_send(request: Request) -> Response:
        received_at = time.time()
        response = await _mail_send(request)
        retry_after = response.headers.get("Retry-After")
        state.record_answer(received_at, response.status_code, int(retry_after) if retry_after else None)
        return response

    async def _mail_send(request: Request) -> Response:
        state.record_received()
        token = _bearer_token(request)
        if token is None or not _authorized(token, api_key):
            await _drain(request)
            return _errors(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED)
        failure = state.failure
        if failure.mode not in (Mode.NORMAL, Mode.SLOW):
            await _drain(request)
            return _failure_response(failure)
        try:
            raw = await _read_capped(request)
        except ClientDisconnect:
            return Response(status_code=HTTPStatus.BAD_REQUEST)  # nobody is left to read it
        if failure.mode is Mode.SLOW:
            # The whole request is in before the delay, so a client that gives up waiting
            # still leaves a request that may be accepted: SendGrid's ambiguous case.
            await asyncio.sleep(failure.delay)
        if raw is None:
            return _errors(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, payload_too_large_error())
        body, errors = await run_in_threadpool(_parse_and_validate, raw)
        if errors:
            return _errors(HTTPStatus.BAD_REQUEST, *errors)
        accepted = state.record_accepted(body, token)
        if webhooks is not None:
            webhooks.add(events_for(body, accepted.message_id, time.time()))
        return Response(status_code=HTTPStatus.ACCEPTED, headers={"X-Message-Id": accepted.message_id})

    @app.get("/v3/messages")
    def activity_feed(request: Request, query: str = "", limit: int = 10) -> Response:
        """SendGrid's Email Activity Feed ("Filter all messages"), over the accepted requests."""
        token = _bearer_token(request)
        if token is None or not _authorized(token, api_key):
            return _errors(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED)
        if not 1 <= limit <= 1000:
            return _errors(HTTPStatus.BAD_REQUEST, api_error("limit must be between 1 and 1000", "limit"))
        try:
            matches = parse_query(query)
        except QueryError as exc:
            return _errors(HTTPStatus.BAD_REQUEST, api_error(f"invalid query: {exc}", "query"))
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
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _authorized(token: str, api_key: str | None) -> bool:
    if api_key is None:
        return token.startswith("SG.")
    return secrets.compare_digest(token.encode(), api_key.encode())


def _errors(
    status: HTTPStatus | int, *errors: ApiError, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(*errors), status_code=int(status), headers=headers)


def _failure_response(failure: FailureMode) -> JSONResponse:
    if failure.mode is Mode.RATE_LIMIT:
        reset_at = int(time.time()) + failure.retry_after
        headers = {
            "Retry-After": str(failure.retry_after),
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_at),
        }
        error = status_error(HTTPStatus.TOO_MANY_REQUESTS, "too many requests")
        return _errors(HTTPStatus.TOO_MANY_REQUESTS, error, headers=headers)
    if failure.mode is Mode.REJECT:
        return _errors(HTTPStatus.BAD_REQUEST, status_error(HTTPStatus.BAD_REQUEST, failure.reason))
    status = HTTPStatus.SERVICE_UNAVAILABLE if failure.mode is Mode.OUTAGE else HTTPStatus(failure.status)
    return _errors(status, status_error(status))


async def _read_capped(request: Request) -> bytes | None:
    """The body, or None when it is larger than SendGrid takes (read and dropped, up to a bound)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        await _drain(request)
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            chunks.clear()
            if size > DRAIN_LIMIT_BYTES:
                break
            continue
        chunks.append(chunk)
    return None if size > MAX_BODY_BYTES else b"".join(chunks)


async def _drain(request: Request) -> None:
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > DRAIN_LIMIT_BYTES:
                return
    except ClientDisconnect:
        return


def _parse_and_validate(raw: bytes) -> tuple[dict[str, Any], list[ApiError]]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        message = f"Bad Request: the request body is not valid JSON ({err})"
        return {}, [status_error(HTTPStatus.BAD_REQUEST, message)]
    errors = validate_mail_send(body)
    return (body if isinstance(body, dict) else {}), errors
