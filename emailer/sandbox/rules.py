"""SendGrid's documented checks on a ``POST /v3/mail/send`` body, as the sandbox applies them.

``validate_mail_send`` returns the errors SendGrid would list in its 400 answer,
each ``{"message", "field", "help"}``; an empty list means the body is acceptable.
This module holds the whole-body entry point and the rules about who the email
goes to and comes from: personalizations, recipient addresses, from and
reply-to, the subject. What the email carries (content, custom arguments,
attachments, categories, headers) is checked in ``content_rules``.
Limits follow SendGrid's Mail Send reference and its error table: at most 1000
personalizations and 1000 recipients (to + cc + bcc) per request. (The 30 MB
limit on the whole request is checked before parsing.)
"""

from __future__ import annotations

import re
from typing import Any

from emailer.sandbox.content_rules import (
    check_attachments,
    check_categories,
    check_content,
    check_custom_args,
    check_headers,
    json_type,
)
from emailer.sandbox.errors import ApiError, api_error

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000

_EMAIL = re.compile(r"^[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+$")
_RECIPIENT_KINDS = ("to", "cc", "bcc")


def is_valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value) is not None


def validate_mail_send(body: object) -> list[ApiError]:
    """Every reason SendGrid would refuse this body with a 400 (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return [api_error(f"Invalid type. Expected: object, given: {json_type(body)}.", None)]
    errors: list[ApiError] = []
    errors += _check_personalizations(body)
    errors += _check_from_and_reply_to(body)
    has_template = isinstance(body.get("template_id"), str) and bool(body["template_id"])
    if not has_template:
        errors += _check_subject(body)
    errors += check_content(body, required=not has_template)
    errors += check_custom_args(body)
    errors += check_attachments(body.get("attachments"))
    errors += check_categories(body.get("categories"))
    errors += check_headers(body.get("headers"), "headers")
    errors += _check_dynamic_template(body)
    return errors


def _check_dynamic_template(body: dict[str, Any]) -> list[ApiError]:
    """A dynamic (``d-``) template takes ``dynamic_template_data``, never legacy ``substitutions``."""
    template_id = body.get("template_id")
    if not (isinstance(template_id, str) and template_id.startswith("d-")):
        return []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list):
        return []
    return [
        api_error(
            "Substitutions may not be used with dynamic templating", f"personalizations.{index}.substitutions"
        )
        for index, p in enumerate(personalizations)
        if isinstance(p, dict) and p.get("substitutions")
    ]


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
    everywhere: set[str] = set()  # an address may appear in one personalization only
    for index, personalization in enumerate(personalizations):
        field = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            errors.append(api_error("Invalid type. Expected: object.", field))
            continue
        errors += _check_recipients(personalization, field)
        errors += _check_across_personalizations(personalization, everywhere)
        total += sum(len(p) for kind in _RECIPIENT_KINDS if isinstance(p := personalization.get(kind), list))
        errors += check_headers(personalization.get("headers"), f"{field}.headers")
    if total > MAX_RECIPIENTS:
        errors.append(
            api_error(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                f"request. You have provided {total}.",
                "personalizations",
            )
        )
    return errors


def _addresses(personalization: dict[str, Any]) -> set[str]:
    return {
        str(r["email"]).lower()
        for kind in _RECIPIENT_KINDS
        if isinstance(recipients := personalization.get(kind), list)
        for r in recipients
        if isinstance(r, dict) and isinstance(r.get("email"), str)
    }


def _check_across_personalizations(personalization: dict[str, Any], everywhere: set[str]) -> list[ApiError]:
    addresses = _addresses(personalization)
    repeated = sorted(addresses & everywhere)
    everywhere |= addresses
    return [
        api_error(
            "Each unique email address in the personalizations array should only be included once. "
            f"You have included [{address}] more than once.",
            "personalizations",
        )
        for address in repeated[:1]
    ]


def check_name(mailbox: object, field: str) -> list[ApiError]:
    """SendGrid refuses a display name containing ';' or ','."""
    name = mailbox.get("name") if isinstance(mailbox, dict) else None
    if isinstance(name, str) and (";" in name or "," in name):
        return [api_error("The name cannot contain ';' or ','.", f"{field}.name")]
    return []


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
            errors += check_name(recipient, f"{field}.{kind}.{position}")
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
    else:
        errors += check_name(sender, "from")
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict) and is_valid_email(reply_to.get("email"))):
        errors.append(api_error("The reply_to email does not contain a valid address.", "reply_to.email"))
    errors += check_name(reply_to, "reply_to")
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
