"""What a mail send carries, as SendGrid checks it: content blocks, custom arguments, attachments,
categories and headers, with the JSON type checks they share.

Limits follow SendGrid's Mail Send reference: custom arguments of at most 10,000
bytes per personalization (global and own merged), at most 10 unique categories
of at most 255 characters, no reserved header names. Who the email goes to is
checked in ``rules``, which also runs every check on a body.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from emailer.sandbox.errors import ApiError, api_error

MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
# fmt: off
RESERVED_HEADERS = frozenset({
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
})
# fmt: on


def check_content(body: dict[str, Any], *, required: bool) -> list[ApiError]:
    content = body.get("content")
    if content is None and not required:
        return []
    if not isinstance(content, list) or not content:
        return [
            api_error(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        ]
    errors: list[ApiError] = []
    types: list[str] = []
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            errors.append(api_error("Invalid type. Expected: object.", f"content.{index}"))
            continue
        block_type = block.get("type")
        if not isinstance(block_type, str) or not block_type:
            errors.append(
                api_error(
                    "The content type must be a string at least one character in length.",
                    f"content.{index}.type",
                )
            )
        else:
            types.append(block_type.lower())
        value = block.get("value")
        if not isinstance(value, str) or not value:
            errors.append(
                api_error(
                    "The content value must be a string at least one character in length.",
                    f"content.{index}.value",
                )
            )
    if _misordered(types):
        errors.append(
            api_error(
                "If present, text/plain content must be first, followed by text/html, "
                "followed by any other content.",
                "content",
            )
        )
    return errors


def _misordered(types: list[str]) -> bool:
    rank = {"text/plain": 0, "text/html": 1}
    ranks = [rank.get(t, 2) for t in types]
    return ranks != sorted(ranks)


def check_custom_args(body: dict[str, Any]) -> list[ApiError]:
    errors: list[ApiError] = []
    global_args = body.get("custom_args", {})
    errors += check_string_values(global_args, "custom_args")
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not isinstance(global_args, dict):
        return errors
    for index, personalization in enumerate(personalizations):
        if not isinstance(personalization, dict):
            continue
        field = f"personalizations.{index}.custom_args"
        own_args = personalization.get("custom_args", {})
        own_errors = check_string_values(own_args, field)
        errors += own_errors
        if own_errors:
            continue
        # Personalization keys override global ones: what travels with each email is the merge.
        merged = {**global_args, **own_args}
        size = len(json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_CUSTOM_ARGS_BYTES:
            errors.append(
                api_error(
                    f"The total size of custom arguments cannot exceed {MAX_CUSTOM_ARGS_BYTES} "
                    f"bytes per personalization; this one has {size}.",
                    field,
                )
            )
    return errors


def check_string_values(mapping: object, field: str) -> list[ApiError]:
    if not isinstance(mapping, dict):
        return [api_error(f"Invalid type. Expected: object, given: {json_type(mapping)}.", field)]
    return [
        api_error(f"Invalid type. Expected: string, given: {json_type(value)}.", f"{field}.{key}")
        for key, value in mapping.items()
        if not isinstance(value, str)
    ]


def check_attachments(attachments: object) -> list[ApiError]:
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        return [api_error("Invalid type. Expected: array.", "attachments")]
    errors: list[ApiError] = []
    for index, attachment in enumerate(attachments):
        field = f"attachments.{index}"
        if not isinstance(attachment, dict):
            errors.append(api_error("Invalid type. Expected: object.", field))
            continue
        if not _is_base64(attachment.get("content")):
            errors.append(api_error("The attachment content must be base64 encoded.", f"{field}.content"))
        filename = attachment.get("filename")
        if not isinstance(filename, str) or not filename:
            errors.append(api_error("The attachment filename parameter is required.", f"{field}.filename"))
        disposition = attachment.get("disposition", "attachment")
        if disposition not in ("attachment", "inline"):
            errors.append(
                api_error(
                    "The disposition of your attachment can be either inline or attachment.",
                    f"{field}.disposition",
                )
            )
        elif disposition == "inline" and not attachment.get("content_id"):
            errors.append(
                api_error(
                    "The content_id parameter is required when the disposition is inline.",
                    f"{field}.content_id",
                )
            )
    return errors


def _is_base64(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def check_categories(categories: object) -> list[ApiError]:
    if categories is None:
        return []
    if not isinstance(categories, list):
        return [api_error("Invalid type. Expected: array.", "categories")]
    errors: list[ApiError] = []
    if len(categories) > MAX_CATEGORIES:
        errors.append(api_error(f"Too many categories. The maximum is {MAX_CATEGORIES}.", "categories"))
    seen: set[str] = set()
    for index, category in enumerate(categories):
        if not isinstance(category, str):
            errors.append(api_error("Invalid type. Expected: string.", f"categories.{index}"))
        elif len(category) > MAX_CATEGORY_LENGTH:
            errors.append(
                api_error(
                    f"A category cannot have more than {MAX_CATEGORY_LENGTH} characters.",
                    f"categories.{index}",
                )
            )
        elif category in seen:
            errors.append(api_error(f"Each category must be unique; [{category}] repeats.", "categories"))
        else:
            seen.add(category)
    return errors


def check_headers(headers: object, field: str) -> list[ApiError]:
    if headers is None:
        return []
    errors = check_string_values(headers, field)
    if isinstance(headers, dict):
        errors += [
            api_error(f"The header '{name}' is reserved and cannot be set.", f"{field}.{name}")
            for name in headers
            if name.lower() in RESERVED_HEADERS
        ]
    return errors


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
