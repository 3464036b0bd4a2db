"""SendGrid's error answers: ``{"errors": [{"message", "field", "help"}]}``, as the sandbox sends them."""

from __future__ import annotations

import re
from http import HTTPStatus

ApiError = dict[str, str | None]

MAX_BODY_BYTES = 30 * 1024 * 1024
"""The largest mail send request SendGrid takes (30 MB, attachments included)."""
HELP_URL = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

UNAUTHORIZED: ApiError = {
    "field": None,
    "message": "The provided authorization grant is invalid, expired, or revoked",
    "help": None,
}

_INDEX = re.compile(r"\.\d+")


def api_error(message: str, field: str | None) -> ApiError:
    """One field error: the help link points at the field's row of SendGrid's error table."""
    help_link = None if field is None else f"{HELP_URL}#message.{_INDEX.sub('', field)}"
    return {"message": message, "field": field, "help": help_link}


def status_error(status: HTTPStatus, message: str | None = None) -> ApiError:
    """An error about the whole request (no field), worded by its status unless told otherwise."""
    return {"message": message or status.phrase, "field": None, "help": None}


def error_body(*errors: ApiError) -> dict[str, list[ApiError]]:
    return {"errors": list(errors)}


def payload_too_large_error() -> ApiError:
    return status_error(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "The JSON payload you have included in your request is too large. "
        f"The maximum is {MAX_BODY_BYTES // (1024 * 1024)} MB.",
    )
