"""JSON Schema of the messages, carrying every rule of the models that JSON Schema can express.

``model_json_schema`` says what the field types say; the rules a model checks
across fields (a body or a template, one attachment source, distinct
categories, reserved header names, how deep template data may nest) are added
here, so that a service in another language that builds a message from the
schema alone builds one Emailer accepts. What no JSON Schema can say is listed
under ``x-rules-not-in-schema`` in the schema itself.

Internal commands are left out unless asked for: other services never send them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.base import Message, message_types
from contracts.commands import (
    MAX_CATEGORIES,
    MAX_HEADERS,
    MAX_METADATA_ENTRIES,
    MAX_RECIPIENTS,
    RESERVED_HEADER_PREFIXES,
    RESERVED_HEADERS,
)
from contracts.fields import (
    HEADER_NAME_PATTERN,
    MAX_JSON_DEPTH,
    MAX_SAFE_INTEGER,
    MAX_TEMPLATE_DATA_BYTES,
    STORABLE_PATTERN,
)
from contracts.values import INLINE_ATTACHMENT_MAX_BYTES
from contracts.version import CONTRACTS_VERSION

INTERNAL_MESSAGES = frozenset({"DispatchEmail", "RecordDeliveryReports"})
"""Commands Emailer sends only to itself; not part of what other services may send."""
DEFS = "#/$defs/{model}"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
ASCII_PATTERN = "^[\\u0000-\\u007f]*$"
NOT_IN_SCHEMA = {
    "SendEmail": [
        "no string holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape not part of a pair): "
        "not every regex engine can name one in a pattern",
        "addresses must be deliverable-looking as the email-validator package decides (syntax and "
        "special-use domains), beyond the 'email' format",
        f"to, cc and bcc together hold at most {MAX_RECIPIENTS} recipients",
        "no address appears twice across to, cc and bcc (compared case-insensitively)",
        "metadata with the email_id is at most 10,000 bytes as JSON (UTF-8)",
        f"template_data is at most {MAX_TEMPLATE_DATA_BYTES} bytes as JSON (UTF-8)",
        f"an inline attachment's content is at most {INLINE_ATTACHMENT_MAX_BYTES} bytes once decoded",
    ],
}


def public_message_types() -> dict[str, type[Message]]:
    """Every message another service sends or subscribes to, by type name."""
    return {name: cls for name, cls in message_types().items() if name not in INTERNAL_MESSAGES}


def message_schema(cls: type[BaseModel], ref_template: str = DEFS) -> dict[str, Any]:
    """The JSON Schema of ``cls`` with its cross-field rules, ``$id`` and the contracts version."""
    schema = cls.model_json_schema(by_alias=True, ref_template=ref_template)
    defs = schema.setdefault("$defs", {})
    ref = _Ref(ref_template)
    for name, definition in [(cls.__name__, schema), *list(defs.items())]:
        rule = _RULES.get(name)
        if rule is not None:
            rule(definition, defs, ref)
    if not defs:
        del schema["$defs"]
    name = cls.__name__
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:emailer:contracts:{CONTRACTS_VERSION}:{name}"
    schema["x-contracts-version"] = CONTRACTS_VERSION
    schema["x-message-intent"] = getattr(cls, "intent", "Send")
    if name in NOT_IN_SCHEMA:
        schema["x-rules-not-in-schema"] = NOT_IN_SCHEMA[name]
    return schema


def write_schemas(directory: Path, *, internal: bool = False) -> list[Path]:
    """Write ``<TypeName>.schema.json`` for every public message (and internal ones if asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    types = message_types() if internal else public_message_types()
    written = []
    for name, cls in sorted(types.items()):
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(message_schema(cls), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


class _Ref:
    def __init__(self, template: str) -> None:
        self.template = template

    def __call__(self, model: str) -> dict[str, str]:
        return {"$ref": self.template.format(model=model)}


def _send_email(schema: dict[str, Any], defs: dict[str, Any], ref: _Ref) -> None:
    props = schema["properties"]
    # A body (non-empty text or html) with a subject, or a template (which may bring both).
    schema["anyOf"] = [
        {"required": ["subject", body], "properties": {"subject": {"type": "string"}, body: _non_empty()}}
        for body in ("text", "html")
    ] + [{"required": ["template_id"], "properties": {"template_id": {"type": "string"}}}]
    props["from"] = {"allOf": [props["from"], {"properties": {"email": {"pattern": ASCII_PATTERN}}}]}
    for kind in ("to", "cc", "bcc"):
        props[kind]["maxItems"] = MAX_RECIPIENTS
    headers = props["headers"]
    (value,) = headers.pop("patternProperties").values()
    headers.update(
        additionalProperties=value,
        maxProperties=MAX_HEADERS,
        propertyNames={"pattern": HEADER_NAME_PATTERN, "not": {"pattern": _reserved_header_pattern()}},
    )
    props["categories"].update(uniqueItems=True, maxItems=MAX_CATEGORIES)
    metadata = props["metadata"]
    metadata["maxProperties"] = MAX_METADATA_ENTRIES
    metadata["propertyNames"]["not"] = {"const": "email_id"}
    template_data = next(b for b in props["template_data"]["anyOf"] if b.get("type") == "object")
    template_data.update(
        propertyNames={"pattern": STORABLE_PATTERN},
        additionalProperties=ref(_template_value(2)),
        **{"x-max-depth": MAX_JSON_DEPTH, "x-max-json-bytes": MAX_TEMPLATE_DATA_BYTES},
    )
    defs.update(_template_value_defs(ref))


def _attachment(schema: dict[str, Any], defs: dict[str, Any], ref: _Ref) -> None:
    content = next(b for b in schema["properties"]["content"]["anyOf"] if b.get("type") == "string")
    base64_chars = 4 * -(-INLINE_ATTACHMENT_MAX_BYTES // 3)
    content.update(pattern=BASE64_PATTERN, maxLength=base64_chars, contentEncoding="base64")
    # Exactly one source: inline content or a blob store reference.
    schema["anyOf"] = [
        {"required": [given], "properties": {given: {"type": "string"}, other: {"type": "null"}}}
        for given, other in (("content", "sha256"), ("sha256", "content"))
    ]
    # An inline (disposition) attachment needs a content id.
    schema["allOf"] = [
        {
            "anyOf": [
                {"properties": {"disposition": {"const": "attachment"}}},
                {"required": ["content_id"], "properties": {"content_id": {"type": "string"}}},
            ]
        }
    ]


_RULES: dict[str, Callable[[dict[str, Any], dict[str, Any], _Ref], None]] = {
    "SendEmail": _send_email,
    "Attachment": _attachment,
}


def _non_empty() -> dict[str, Any]:
    return {"type": "string", "minLength": 1}


def _reserved_header_pattern() -> str:
    """Header names Emailer or the provider set, case-insensitively, without a regex flag."""

    def fold(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    names = "|".join(fold(name) for name in sorted(RESERVED_HEADERS))
    prefixes = "|".join(fold(prefix) for prefix in RESERVED_HEADER_PREFIXES)
    return f"^(?:(?:{names})$|(?:{prefixes}))"


def _template_value(depth: int) -> str:
    return f"TemplateValueAtDepth{depth}"


def _template_value_defs(ref: _Ref) -> dict[str, Any]:
    """A template data value at each depth: containers down to ``MAX_JSON_DEPTH``, then scalars only."""
    scalar: list[dict[str, Any]] = [
        {"type": ["null", "boolean"]},
        {"type": "number", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
        {"type": "string", "pattern": STORABLE_PATTERN},
    ]
    defs: dict[str, Any] = {_template_value(MAX_JSON_DEPTH + 1): {"anyOf": scalar}}
    for depth in range(MAX_JSON_DEPTH, 1, -1):
        deeper = ref(_template_value(depth + 1))
        defs[_template_value(depth)] = {
            "anyOf": [
                *scalar,
                {
                    "type": "object",
                    "propertyNames": {"pattern": STORABLE_PATTERN},
                    "additionalProperties": deeper,
                },
                {"type": "array", "items": deeper},
            ]
        }
    return defs
