"""The OpenAPI document: the request bodies the gateway decodes itself, and every error it answers.

``POST /v1/emails`` reads its body as bytes (to bound it and to decode it as
the worker does), so FastAPI cannot see its model: ``install_request_schema``
puts the contract's JSON Schema into the document, with its nested models as
components, for clients and for schemathesis.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from contracts.schema import message_schema

_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        }
    }
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API token, or one without the needed scope", "content": _ERROR},
    404: {"description": "no such email", "content": _ERROR},
    409: {"description": "the email_id was already used for a different email", "content": _ERROR},
    413: {
        "description": "the request body is larger than the gateway reads, the email (encoded) larger "
        "than the provider takes, or the file larger than EMAILER_ATTACHMENT_MAX_BYTES",
        "content": _ERROR,
    },
    422: {
        "description": "the body is not a valid command; `detail` names each field and rule",
        "content": _ERROR,
    },
    503: {
        "description": "the database, the broker or the object store is not answering; "
        "retry after `Retry-After`",
        "content": _ERROR,
    },
}


_TOO_LATE = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "email_id": {"type": "string"},
                "cancelled": {"type": "boolean"},
                "status": {"type": "string", "enum": ["dispatching", "accepted", "failed"]},
            },
            "required": ["error", "email_id", "cancelled", "status"],
        }
    }
}

CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the cancel took effect (or had already): the email will not be sent"},
    401: ERROR_RESPONSES[401],
    404: ERROR_RESPONSES[404],
    409: {
        "description": "too late to cancel: the email is being handed to the provider (dispatching), the "
        "provider has it (accepted), or it failed; `status` says which. Nothing was changed",
        "content": _TOO_LATE,
    },
    503: ERROR_RESPONSES[503],
}


def install_request_schema(api: FastAPI, models: dict[str, type[BaseModel]]) -> None:
    """Declare the JSON body of every route marked ``x-request-model`` with that model's schema."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        document = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for path in document.get("paths", {}).values():
            for operation in path.values():
                name = operation.pop("x-request-model", None)
                if name is None:
                    continue
                schema = message_schema(models[name], ref_template="#/components/schemas/{model}")
                for key in ("$schema", "$id"):  # OpenAPI 3.1 components need neither
                    schema.pop(key, None)
                components.update(schema.pop("$defs", {}))
                components[name] = schema
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
                }
        api.openapi_schema = document
        return document

    api.openapi = openapi  # type: ignore[method-assign]
