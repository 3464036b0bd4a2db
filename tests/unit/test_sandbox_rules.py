"""The sandbox checks a mail send body the way SendGrid documents it."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest

from emailer.sandbox.rules import validate_mail_send

Body = dict[str, Any]


def good_body() -> Body:
    return {
        "personalizations": [
            {
                "to": [{"email": "ada@example.com", "name": "Ada"}],
                "cc": [{"email": "grace@example.com"}],
                "bcc": [{"email": "audit@example.com"}],
                "custom_args": {"email_id": "e-1"},
            }
        ],
        "from": {"email": "shop@example.com", "name": "Shop"},
        "reply_to": {"email": "help@example.com"},
        "subject": "Your order",
        "content": [
            {"type": "text/plain", "value": "Thanks"},
            {"type": "text/html", "value": "<p>Thanks</p>"},
        ],
        "custom_args": {"email_id": "e-1"},
        "attachments": [
            {
                "content": base64.b64encode(b"\x00\x01binary").decode(),
                "type": "application/pdf",
                "filename": "invoice.pdf",
                "disposition": "attachment",
            }
        ],
        "categories": ["orders", "receipts"],
        "headers": {"X-Order": "1234"},
    }


def fields(body: object) -> list[str | None]:
    return [error["field"] for error in validate_mail_send(body)]


def test_a_complete_body_passes() -> None:
    assert validate_mail_send(good_body()) == []


def test_a_template_stands_in_for_subject_and_content() -> None:
    body = good_body()
    del body["subject"], body["content"]
    body["template_id"] = "d-0123456789abcdef"
    body["dynamic_template_data"] = {"name": "Ada"}
    assert validate_mail_send(body) == []


def test_a_subject_in_every_personalization_stands_in_for_the_global_one() -> None:
    body = good_body()
    del body["subject"]
    body["personalizations"][0]["subject"] = "Per recipient"
    assert validate_mail_send(body) == []


def test_errors_carry_message_field_and_help() -> None:
    body = good_body()
    del body["from"]
    [error] = validate_mail_send(body)
    assert set(error) == {"message", "field", "help"}
    assert error["field"] == "from"
    assert "from object must be provided" in str(error["message"])
    assert str(error["help"]).endswith("#message.from")


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert fields([good_body()]) == [None]


def _set(path: str, value: Any) -> Callable[[Body], None]:
    def mutate(body: Body) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(key: str) -> Callable[[Body], None]:
    return lambda body: body.pop(key)


def _recipients(count: int, kind: str = "to") -> Callable[[Body], None]:
    def mutate(body: Body) -> None:
        p = body["personalizations"][0]
        p[kind] = [{"email": f"user{i}@example.com"} for i in range(count)]
        for other in {"to", "cc", "bcc"} - {kind}:
            p.pop(other, None)
        if kind != "to":
            p["to"] = [{"email": "first@example.com"}]

    return mutate


def _dynamic_template_with_substitutions(body: Body) -> None:
    body["template_id"] = "d-0123456789abcdef0123456789abcdef"
    body["personalizations"][0]["substitutions"] = {"-name-": "Ada"}


BAD_CASES: dict[str, tuple[Callable[[Body], None], str]] = {
    "no personalizations": (_delete("personalizations"), "personalizations"),
    "empty personalizations": (_set("personalizations", []), "personalizations"),
    "1001 personalizations": (
        _set("personalizations", [{"to": [{"email": f"u{i}@example.com"}]} for i in range(1001)]),
        "personalizations",
    ),
    "no to": (_set("personalizations.0.to", []), "personalizations.0.to"),
    "bad to address": (
        _set("personalizations.0.to.0.email", "not-an-address"),
        "personalizations.0.to.0.email",
    ),
    "bad cc address": (
        _set("personalizations.0.cc.0.email", "grace@"),
        "personalizations.0.cc.0.email",
    ),
    "1001 recipients": (_recipients(1001), "personalizations"),
    "1001 recipients counting bcc": (_recipients(1000, "bcc"), "personalizations"),
    "duplicate across to and bcc": (
        _set("personalizations.0.bcc.0.email", "ADA@example.com"),
        "personalizations.0",
    ),
    "to name with a semicolon": (
        _set("personalizations.0.to.0.name", "Lovelace; Ada"),
        "personalizations.0.to.0.name",
    ),
    "cc name with a comma": (
        _set("personalizations.0.cc.0", {"email": "grace@example.com", "name": "Hopper, Grace"}),
        "personalizations.0.cc.0.name",
    ),
    "from name with a comma": (_set("from.name", "Shop, Inc"), "from.name"),
    "the same address in two personalizations": (
        lambda body: body["personalizations"].append({"to": [{"email": "Ada@Example.com"}]}),
        "personalizations",
    ),
    "substitutions with a dynamic template": (
        _dynamic_template_with_substitutions,
        "personalizations.0.substitutions",
    ),
    "no from": (_delete("from"), "from"),
    "bad from": (_set("from.email", "shop.example.com"), "from.email"),
    "bad reply_to": (_set("reply_to.email", "nobody"), "reply_to.email"),
    "no subject": (_delete("subject"), "subject"),
    "empty subject": (_set("subject", ""), "subject"),
    "no content": (_delete("content"), "content"),
    "empty content list": (_set("content", []), "content"),
    "content without type": (_set("content.0", {"value": "x"}), "content.0.type"),
    "empty content value": (_set("content.1.value", ""), "content.1.value"),
    "html before text": (
        _set(
            "content",
            [{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}],
        ),
        "content",
    ),
    "custom_args value not a string": (_set("custom_args.count", 3), "custom_args.count"),
    "personalization custom_args value not a string": (
        _set("personalizations.0.custom_args.flag", True),
        "personalizations.0.custom_args.flag",
    ),
    "custom_args over 10000 bytes": (
        _set("custom_args.big", "x" * 10_000),
        "personalizations.0.custom_args",
    ),
    "attachment not base64": (_set("attachments.0.content", "***"), "attachments.0.content"),
    "attachment without filename": (
        _set("attachments.0.filename", ""),
        "attachments.0.filename",
    ),
    "inline attachment without content_id": (
        _set("attachments.0.disposition", "inline"),
        "attachments.0.content_id",
    ),
    "11 categories": (_set("categories", [f"c{i}" for i in range(11)]), "categories"),
    "category over 255 characters": (_set("categories.1", "c" * 256), "categories.1"),
    "duplicate category": (_set("categories", ["orders", "orders"]), "categories"),
    "header value not a string": (_set("headers.X-Count", 1), "headers.X-Count"),
    "reserved header": (_set("headers.Subject", "sneaky"), "headers.Subject"),
    "reserved header in a personalization": (
        _set("personalizations.0.headers", {"dkim-signature": "x"}),
        "personalizations.0.headers.dkim-signature",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_body_is_refused_on_its_field(case: str) -> None:
    mutate, field = BAD_CASES[case]
    body = copy.deepcopy(good_body())
    mutate(body)
    assert fields(body) == [field]


def test_custom_args_are_measured_per_personalization_with_the_global_ones_merged() -> None:
    body = good_body()
    body["custom_args"]["half"] = "x" * 5_000
    body["personalizations"][0]["custom_args"]["other_half"] = "y" * 4_900
    assert fields(body) == []
    body["personalizations"][0]["custom_args"]["other_half"] = "y" * 5_000
    assert fields(body) == ["personalizations.0.custom_args"]


def test_every_problem_is_reported_not_only_the_first() -> None:
    body = good_body()
    del body["from"], body["subject"]
    body["categories"] = ["a"] * 2
    assert sorted(map(str, fields(body))) == ["categories", "from", "subject"]
