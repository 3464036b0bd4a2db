"""SendGrid's ``POST /v3/mail/send`` as the sandbox answers it: a bare ASGI handler, its hot path.

A mail send is checked in this order, answering as SendGrid does: the bearer
API key (401), the failure mode the sandbox was told to play (503, 429, a
delay, another 5xx, a 400), the size (413), the JSON (400), SendGrid's
documented rules (400). An accepted request answers 202 with an empty body and
an ``X-Message-Id`` header, and is kept in ``SandboxState`` for the control API;
with a ``WebhookSender``, its events (``scenarios.py``) are handed to it.

It is plain ASGI, not a FastAPI route, because it is what benchmarks hammer:
no routing, dependency solving, ``Request`` or ``Response`` objects on the way,
and a small body (every email without a large attachment) is parsed and
checked on the event loop, not in a thread (the hop cost more than the check).
A larger body is checked in a worker thread so the loop keeps serving. The
rules are the same ones (``rules.py``); the answers are the same bytes.

The API key is compared, never logged nor echoed; only its last four
characters are kept with an accepted request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import anyio.to_thread

from emailer.sandbox.errors import (
    MAX_BODY_BYTES,
    UNAUTHORIZED,
    ApiError,
    error_body,
    payload_too_large_error,
    status_error,
)
from emailer.sandbox.rules import validate_mail_send
from emailer.sandbox.scenarios import events_for
from emailer.sandbox.state import FailureMode, Mode, SandboxState
from emailer.sandbox.webhooks import WebhookSender

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""Status, headers, body."""

PATH = "/v3/mail/send"
DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES
"""A refused body is still read (and dropped) up to this size, so the client sees the answer.

Answering before the body is read makes the server close a socket with unread
data, which resets the connection: the client would see a network error, not
the 401/413/429 SendGrid would have sent.
"""
INLINE_CHECK_BYTES = 64 * 1024
"""Bodies up to this size are parsed and checked on the event loop (tens of microseconds)."""
_JSON = (b"content-type", b"application/json")
_ERRORS = {
    "content": {
        "application/json": {"example": {"errors": [{"message": "...", "field": "...", "help": None}]}}
    }
}
OPENAPI: dict[str, Any] = {
    "post": {
        "summary": "SendGrid's v3 Mail Send",
        "description": "Checked and answered as SendGrid does, with `Authorization: Bearer <key>` (served "
        "beside the FastAPI application: its body is SendGrid's, see SendGrid's Mail Send reference).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "202": {"description": "accepted; the `X-Message-Id` header names the message"},
            "400": {"description": "the body breaks SendGrid's rules (each field named)", **_ERRORS},
            "401": {"description": "a missing or wrong API key", **_ERRORS},
            "413": {"description": "over 30 MB", **_ERRORS},
            "429": {"description": "mode rate_limit (`Retry-After`, `X-RateLimit-Reset`)", **_ERRORS},
            "503": {"description": "mode outage (mode error: another 5xx)", **_ERRORS},
        },
    }
}
"""How ``/docs`` shows this endpoint."""


class ClientGone(Exception):
    """The client disconnected before its whole body came in."""


class MailSend:
    """The ASGI handler of ``POST /v3/mail/send`` (the caller routes to it)."""

    def __init__(self, state: SandboxState, api_key: str | None, webhooks: WebhookSender | None) -> None:
        self._state = state
        self._api_key = api_key
        self._webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at = time.time()
        status, headers, body = await self._answer(scope, receive)
        retry_after = next((int(v) for k, v in headers if k == b"retry-after"), None)
        self._state.record_answer(received_at, status, retry_after)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        state = self._state
        state.record_received()
        authorization, declared = _headers(scope)
        token = bearer_token(authorization)
        if token is None or not authorized(token, self._api_key):
            await _drain(receive)
            return errors(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED)
        failure = state.failure
        if failure.mode not in (Mode.NORMAL, Mode.SLOW):
            await _drain(receive)
            return failure_answer(failure)
        try:
            raw = await _read_capped(receive, declared)
        except ClientGone:
            return HTTPStatus.BAD_REQUEST, [], b""  # nobody is left to read it
        if failure.mode is Mode.SLOW:
            # The whole request is in before the delay, so a client that gives up waiting
            # still leaves a request that may be accepted: SendGrid's ambiguous case.
            await asyncio.sleep(failure.delay)
        if raw is None:
            return errors(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, payload_too_large_error())
        if len(raw) <= INLINE_CHECK_BYTES:
            body, problems = parse_and_validate(raw)
        else:
            body, problems = await anyio.to_thread.run_sync(parse_and_validate, raw)
        if problems:
            return errors(HTTPStatus.BAD_REQUEST, *problems)
        accepted = state.record_accepted(body, token)
        if self._webhooks is not None:
            self._webhooks.add(events_for(body, accepted.message_id, time.time()))
        return HTTPStatus.ACCEPTED, [(b"x-message-id", accepted.message_id.encode())], b""


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (None without one)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authorized(token: str, api_key: str | None) -> bool:
    """With no key configured, any SendGrid-shaped (``SG.``) key passes."""
    if api_key is None:
        return token.startswith("SG.")
    return secrets.compare_digest(token.encode(), api_key.encode())


def error_json(*problems: ApiError) -> bytes:
    """SendGrid's error body, encoded as Starlette's ``JSONResponse`` encodes it."""
    return json.dumps(error_body(*problems), ensure_ascii=False, separators=(",", ":")).encode()


def errors(status: HTTPStatus, *problems: ApiError, headers: dict[str, str] | None = None) -> Answer:
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return int(status), [_JSON, *extra], error_json(*problems)


def failure_answer(failure: FailureMode) -> Answer:
    """The answer of a failure mode other than normal and slow."""
    if failure.mode is Mode.RATE_LIMIT:
        reset_at = int(time.time()) + failure.retry_after
        headers = {
            "Retry-After": str(failure.retry_after),
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_at),
        }
        error = status_error(HTTPStatus.TOO_MANY_REQUESTS, "too many requests")
        return errors(HTTPStatus.TOO_MANY_REQUESTS, error, headers=headers)
    if failure.mode is Mode.REJECT:
        return errors(HTTPStatus.BAD_REQUEST, status_error(HTTPStatus.BAD_REQUEST, failure.reason))
    status = HTTPStatus.SERVICE_UNAVAILABLE if failure.mode is Mode.OUTAGE else HTTPStatus(failure.status)
    return errors(status, status_error(status))


def parse_and_validate(raw: bytes) -> tuple[dict[str, Any], list[ApiError]]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        message = f"Bad Request: the request body is not valid JSON ({err})"
        return {}, [status_error(HTTPStatus.BAD_REQUEST, message)]
    problems = validate_mail_send(body)
    return (body if isinstance(body, dict) else {}), problems


def _headers(scope: Scope) -> tuple[str, int | None]:
    """The Authorization header (latin-1, as Starlette reads it) and the declared Content-Length."""
    authorization, declared = "", None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            declared = int(value)
    return authorization, declared


async def _read_capped(receive: Receive, declared: int | None) -> bytes | None:
    """The body, or None when it is larger than SendGrid takes (read and dropped, up to a bound)."""
    if declared is not None and declared > MAX_BODY_BYTES:
        await _drain(receive)
        return None
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            chunks.clear()
            if size > DRAIN_LIMIT_BYTES:
                break
            continue
        chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _drain(receive: Receive) -> None:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if size > DRAIN_LIMIT_BYTES or not message.get("more_body", False):
            return
