"""SendGrid's documented checks on a ``POST /v3/mail/send`` body, as the sandbox applies them.

``validate_mail_send`` returns the errors SendGrid would list in its 400 answer,
each ``{"message", "field", "help"}``; an empty list means the body is acceptable.
Limits follow SendGrid's Mail Send reference and its error table: at most 1000
personalizations and 1000 recipients (to + cc + bcc) per request, custom
arguments of at most 10,000 bytes per email, at most 10 categories of at most
255 characters. (The 30 MB limit on the whole request is checked before parsing.)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from emailer.sandbox.errors import ApiError, api_error

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
# fmt: off
RESERVED_HEADERS = frozenset({
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
})
# fmt: on

_EMAIL = re.compile(r"^[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+$")
_RECIPIENT_KINDS = ("to", "cc", "bcc")


def is_valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value) is not None


def validate_mail_send(body: object) -> list[ApiError]:
    """Every reason SendGrid would refuse this body with a 400 (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return [api_error(f"Invalid type. Expected: object, given: {_json_type(body)}.", None)]
    errors: list[ApiError] = []
    errors += _check_personalizations(body)
    errors += _check_from_and_reply_to(body)
    has_template = isinstance(body.get("template_id"), str) and bool(body["template_id"])
    if not has_template:
        errors += _check_subject(body)
    errors += _check_content(body, required=not has_template)
    errors += _check_custom_args(body)
    errors += _check_attachments(body.get("attachments"))
    errors += _check_categories(body.get("categories"))
    errors += _check_headers(body.get("headers"), "headers")
    return errors


def _json_type(value: object) -> str:
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


def _check_personalizations(body: dict[str, Any]) -> list[ApiError]:
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return [api_error("You must have at least one personalization.", "personalizations")]
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return [
            api_error(
                f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations "
                f"per API request. You have provided {len(personalizations)} personalizations. "
                "Please consider splitting this into multiple requests and resending your request.",
                "personalizations",
            )
        ]
    errors: list[ApiError] = []
    total = 0
    for index, personalization in enumerate(personalizations):
        field = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            errors.append(api_error("Invalid type. Expected: object.", field))
            continue
        errors += _check_recipients(personalization, field)
        total += sum(len(p) for kind in _RECIPIENT_KINDS if isinstance(p := personalization.get(kind), list))
        errors += _check_headers(personalization.get("headers"), f"{field}.headers")
    if total > MAX_RECIPIENTS:
        errors.append(
            api_error(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                f"request. You have provided {total}.",
                "personalizations",
            )
        )
    return errors


def _check_recipients(personalization: dict[str, Any], field: str) -> list[ApiError]:
    errors: list[ApiError] = []
    to = personalization.get("to")
    if not isinstance(to, list) or not to:
        errors.append(
            api_error(
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"{field}.to",
            )
        )
    seen: set[str] = set()
    duplicate_reported = False
    for kind in _RECIPIENT_KINDS:
        recipients = personalization.get(kind)
        if recipients is None or (kind == "to" and not isinstance(recipients, list)):
            continue
        if not isinstance(recipients, list):
            errors.append(api_error("Invalid type. Expected: array.", f"{field}.{kind}"))
            continue
        for position, recipient in enumerate(recipients):
            address = recipient.get("email") if isinstance(recipient, dict) else None
            if not is_valid_email(address):
                errors.append(
                    api_error("Does not contain a valid address.", f"{field}.{kind}.{position}.email")
                )
                continue
            key = str(address).lower()
            if key in seen and not duplicate_reported:
                duplicate_reported = True
                errors.append(
                    api_error(
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc. We found the first duplicate instance of "
                        f"[{address}] in the {field}.{kind} field.",
                        field,
                    )
                )
            seen.add(key)
    return errors


def _check_from_and_reply_to(body: dict[str, Any]) -> list[ApiError]:
    errors: list[ApiError] = []
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        errors.append(
            api_error(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
            )
        )
    elif not is_valid_email(sender["email"]):
        errors.append(api_error("The from email does not contain a valid address.", "from.email"))
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict) and is_valid_email(reply_to.get("email"))):
        errors.append(api_error("The reply_to email does not contain a valid address.", "reply_to.email"))
    return errors


def _check_subject(body: dict[str, Any]) -> list[ApiError]:
    def has_subject(container: object) -> bool:
        return (
            isinstance(container, dict)
            and isinstance(container.get("subject"), str)
            and bool(container["subject"])
        )

    personalizations = body.get("personalizations")
    every_personalization = (
        isinstance(personalizations, list)
        and bool(personalizations)
        and all(has_subject(p) for p in personalizations)
    )
    if has_subject(body) or every_personalization:
        return []
    return [
        api_error(
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
            "subject",
        )
    ]


def _check_content(body: dict[str, Any], *, required: bool) -> list[ApiError]:
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


def _check_custom_args(body: dict[str, Any]) -> list[ApiError]:
    errors: list[ApiError] = []
    global_args = body.get("custom_args", {})
    errors += _check_string_values(global_args, "custom_args")
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not isinstance(global_args, dict):
        return errors
    for index, personalization in enumerate(personalizations):
        if not isinstance(personalization, dict):
            continue
        field = f"personalizations.{index}.custom_args"
        own_args = personalization.get("custom_args", {})
        own_errors = _check_string_values(own_args, field)
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


def _check_string_values(mapping: object, field: str) -> list[ApiError]:
    if not isinstance(mapping, dict):
        return [api_error(f"Invalid type. Expected: object, given: {_json_type(mapping)}.", field)]
    return [
        api_error(f"Invalid type. Expected: string, given: {_json_type(value)}.", f"{field}.{key}")
        for key, value in mapping.items()
        if not isinstance(value, str)
    ]


def _check_attachments(attachments: object) -> list[ApiError]:
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


def _check_categories(categories: object) -> list[ApiError]:
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


def _check_headers(headers: object, field: str) -> list[ApiError]:
    if headers is None:
        return []
    errors = _check_string_values(headers, field)
    if isinstance(headers, dict):
        errors += [
            api_error(f"The header '{name}' is reserved and cannot be set.", f"{field}.{name}")
            for name in headers
            if name.lower() in RESERVED_HEADERS
        ]
    return errors
