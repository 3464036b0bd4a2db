"""What the gateway answers when a dependency fails: 503 with a reason, never a bare 500.

A database or broker that does not answer is the service being unavailable for
now, not a bad request: the client gets 503, ``Retry-After`` and a JSON reason
naming the dependency, and may retry the same request (it is idempotent by
``email_id``). The log gets one line with the exception type, never the
statement parameters SQLAlchemy would put in its message.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emailer.adapters.bus import BusError
from emailer.infrastructure import unavailable_dependency
from emailer.redaction import describe

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 5
NOTHING_CHANGED = "nothing was changed, retry later"


class DependencyUnavailable(Exception):
    """The database or the broker did not answer; ``dependency`` names which."""

    def __init__(self, dependency: str, cause: BaseException, outcome: str = NOTHING_CHANGED) -> None:
        super().__init__(f"the {dependency} is unavailable: {describe(cause)}")
        self.dependency = dependency
        self.outcome = outcome


def unavailable_response(dependency: str, outcome: str = NOTHING_CHANGED) -> JSONResponse:
    return JSONResponse(
        {
            "error": f"the {dependency} is unavailable; {outcome}",
            "dependency": dependency,
            "retry_after": RETRY_AFTER_SECONDS,
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(api: FastAPI) -> None:
    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Every error body has the same shape: {"error": "..."} (documented in the OpenAPI).
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(DependencyUnavailable)
    async def _unavailable(request: Request, exc: DependencyUnavailable) -> JSONResponse:
        log.warning("gateway.dependency_unavailable", path=request.url.path, error=str(exc))
        return unavailable_response(exc.dependency, exc.outcome)

    async def _dependency(request: Request, exc: Exception) -> JSONResponse:
        dependency = unavailable_dependency(exc)
        if dependency is not None:
            log.warning("gateway.dependency_unavailable", path=request.url.path, error=describe(exc))
            return unavailable_response(dependency)
        log.error("gateway.unexpected_error", path=request.url.path, error=describe(exc))
        return JSONResponse({"error": "internal error; it was logged"}, status_code=500)

    # The exception types a failing dependency raises get their own handlers: Starlette
    # answers those and is done, where the catch-all below also re-raises to the server,
    # which logs a traceback (wanted for a bug, noise for a database that is down).
    for kind in _dependency_errors():
        api.add_exception_handler(kind, _dependency)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return await _dependency(request, exc)


def _dependency_errors() -> tuple[type[Exception], ...]:
    from amqp.exceptions import AMQPError
    from kombu.exceptions import KombuError
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, BusError, ConnectionError, KombuError, AMQPError)
