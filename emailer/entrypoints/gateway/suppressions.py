"""``/v1/suppressions``: read the suppression list (read scope), add or remove an address (send scope).

An address is compared without regard to case. Adding an address that is
listed already changes nothing (its first reason stays) and answers 200; a new
entry answers 201.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError

from emailer.bootstrap import App
from emailer.domain.suppression import Suppression
from emailer.entrypoints.gateway.auth import TokenCheck
from emailer.entrypoints.gateway.openapi import ERROR_RESPONSES
from handlers.suppressions import add_by_hand, list_page, look_up, remove_by_hand

_ADDRESS = TypeAdapter(EmailStr)


class SuppressionView(BaseModel):
    address: str
    reason: str
    source_email_id: str | None = None
    detail: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, entry: Suppression) -> SuppressionView:
        return cls(
            address=entry.address,
            reason=entry.reason.value,
            source_email_id=entry.source_email_id,
            detail=entry.detail,
            created_at=entry.created_at,
        )


class SuppressionPage(BaseModel):
    suppressions: list[SuppressionView]
    next_after: str | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    found: dict[int | str, dict[str, Any]] = {k: v for k, v in ERROR_RESPONSES.items() if k in codes}
    if 404 in codes:
        found[404] = {**found[404], "description": "the address is not on the suppression list"}
    return found


_BAD_ADDRESS: dict[int | str, dict[str, Any]] = {
    400: {**ERROR_RESPONSES[422], "description": "not an email address"}
}


def suppressions_router(app: App, tokens: TokenCheck) -> APIRouter:
    router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])
    read = [Depends(tokens.require("read"))]
    write = [Depends(tokens.require("send"))]

    @router.get("", response_model=SuppressionPage, responses=_errors(401, 503), dependencies=read)
    async def list_suppressions(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100, after: str | None = None
    ) -> SuppressionPage:
        """Listed addresses in address order; pass ``next_after`` as ``after`` for the next page."""
        entries = await run_in_threadpool(list_page, app.new_uow(), limit, after)
        views = [SuppressionView.of(e) for e in entries]
        return SuppressionPage(
            suppressions=views, next_after=views[-1].address if len(views) == limit else None
        )

    @router.get(
        "/{address}", response_model=SuppressionView, responses=_errors(401, 404, 503), dependencies=read
    )
    async def get_suppression(address: str) -> Any:
        """Why the address is listed (and since when, and which email listed it)."""
        entry = await run_in_threadpool(look_up, app.new_uow(), address)
        if entry is None:
            return JSONResponse({"error": "the address is not on the suppression list"}, status_code=404)
        return SuppressionView.of(entry)

    @router.put(
        "/{address}",
        response_model=SuppressionView,
        responses={
            201: {"description": "listed now", "model": SuppressionView},
            **_BAD_ADDRESS,
            **_errors(401, 503),
        },
        dependencies=write,
    )
    async def add_suppression(address: str, response: Response, note: str | None = None) -> Any:
        """List the address by hand (reason ``manual``); 200 if it was listed already (its reason stays)."""
        try:
            _ADDRESS.validate_python(address)
        except ValidationError:
            return JSONResponse({"error": "not an email address"}, status_code=400)
        entry, added = await run_in_threadpool(add_by_hand, app.new_uow(), address, note, app.clock.now())
        response.status_code = 201 if added else 200
        return SuppressionView.of(entry)

    @router.delete("/{address}", status_code=204, responses=_errors(401, 404, 503), dependencies=write)
    async def remove_suppression(address: str) -> Response:
        """Take the address off the list: later emails go to it again."""
        if not await run_in_threadpool(remove_by_hand, app.new_uow(), address):
            return JSONResponse({"error": "the address is not on the suppression list"}, status_code=404)
        return Response(status_code=204)

    return router
