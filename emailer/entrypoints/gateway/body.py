"""Request bodies: read within a limit, decoded by the same validation the worker uses.

The body is read as bytes, never past ``limit`` (a larger one is refused with
413 before it is buffered), and decoded with ``model_validate_json``: exactly
what the worker does with a message from the bus, so what the gateway accepts
the worker stores. Errors name the field and the rule and never echo the input
back beyond a short excerpt.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
EXCERPT_CHARS = 40
MESSAGE_CHARS = 300


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


class InvalidBody(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidBody(field_errors(exc)) from None


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{field, rule, message, excerpt}``: no input beyond a short excerpt."""
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=True):
        error: dict[str, Any] = {
            "field": ".".join(str(p) for p in err["loc"]) or "body",
            "rule": err["type"],
            "message": _short(err["msg"], MESSAGE_CHARS),
        }
        given = err.get("input")
        if isinstance(given, str | int | float | bool) and not isinstance(given, dict | list):
            error["excerpt"] = _short(repr(given), EXCERPT_CHARS)
        errors.append(error)
    return errors


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
