"""The gateway's FastAPI application.

``POST /v1/emails`` answers 202 only once the command is durable: with the
embedded in-memory bus it is handled in this process and committed first;
with RabbitMQ it is on the broker with a publisher confirm.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from contracts import SendEmail
from contracts.wire import ENDPOINT, H
from emailer.bootstrap import App
from handlers.ports import MessageContext
from handlers.unit_of_work import outgoing

HTTP_COMMAND_NAMESPACE = uuid.UUID("0b6f9f43-2c59-4a51-8d6f-4f3c1f7a8e21")


def http_message_id(email_id: str) -> str:
    """The same email id posted twice is the same message: the inbox dedupes it too."""
    return str(uuid.uuid5(HTTP_COMMAND_NAMESPACE, email_id))


def create_app(app: App) -> FastAPI:
    api = FastAPI(
        title="Emailer",
        version="1",
        summary="Send email; read its state and timeline.",
    )

    @api.post("/v1/emails", status_code=202, responses={422: {"description": "invalid SendEmail"}})
    async def send(command: SendEmail, request: Request, response: Response) -> dict[str, Any]:
        """Accept a SendEmail. Re-posting the same ``email_id`` answers the same and sends nothing new."""
        message_id = http_message_id(command.email_id)
        headers = {H.CORRELATION_ID: request.headers.get("X-Correlation-Id") or message_id}
        context = MessageContext(message_id, "SendEmail", headers)
        if app.settings.embedded_bus:
            await run_in_threadpool(app.pipeline.handle_local, command, context)
        else:
            message = outgoing(
                command,
                MessageContext(message_id, "HttpRequest", headers),
                message_id=message_id,
                now=app.clock.now(),
                reply_to=ENDPOINT,
                destination=app.settings.input_queue,
            )
            # No outbox row: the command is durable once the broker confirmed it (then 202).
            await run_in_threadpool(app.bus.publish, [message])
        location = f"/v1/emails/{command.email_id}"
        response.headers["Location"] = location
        return {"email_id": command.email_id, "accepted": True, "status_url": location}

    @api.get("/v1/emails/{email_id}")
    async def status(email_id: str) -> dict[str, Any]:
        """The email's state, per-recipient state and timeline."""
        from emailer.adapters.persistence.queries import email_view

        view = await run_in_threadpool(email_view, app.engine, email_id)
        if view is None:
            raise HTTPException(404, detail=f"no email {email_id!r}")
        return view

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when the database and the bus answer."""
        checks = {
            "database": await run_in_threadpool(_db_ok, app),
            "bus": await run_in_threadpool(app.bus.ping),
        }
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return api


def _db_ok(app: App) -> bool:
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
