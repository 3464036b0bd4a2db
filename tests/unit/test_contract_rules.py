"""The contract refuses what could not be stored, carried in a header or sent: the same on every path.

A command reaches Emailer as JSON bytes on the bus (``model_validate_json``) or
as a parsed HTTP body (``model_validate``): both must decide alike, so each bad
value is tried both ways.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import SendEmail
from contracts.fields import MAX_JSON_DEPTH
from tests.factories import send_email_payload

Decode = Callable[[dict[str, Any]], SendEmail]


def _from_json(payload: dict[str, Any]) -> SendEmail:
    return SendEmail.model_validate_json(json.dumps(payload))


def _from_python(payload: dict[str, Any]) -> SendEmail:
    return SendEmail.model_validate(payload)


BOTH_PATHS = pytest.mark.parametrize("decode", [_from_json, _from_python], ids=["bus", "http"])


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth - 1):
        node = {"n": node}
    return node


def _refused(decode: Decode, payload: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as exc:
        decode(payload)
    return {".".join(str(p) for p in e["loc"]) or "body" for e in exc.value.errors()}


@BOTH_PATHS
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "a\x00b"}, "subject"),
        ({"text": "a\x00b"}, "text"),
        ({"html": "<p>\x00</p>"}, "html"),
        ({"metadata": {"k": "v\x00"}}, "metadata.k"),
        ({"from": {"email": "shop@example.com", "name": "Sh\x00p"}}, "from.name"),
        ({"template_id": "d-1", "template_data": {"name": "A\x00"}}, "template_data"),
        ({"template_id": "d-1", "template_data": {"k\x00": "v"}}, "template_data"),
    ],
)
def test_nul_is_refused_in_every_text_field(decode: Decode, change: dict[str, Any], field: str) -> None:
    assert field in _refused(decode, send_email_payload(**change))


@BOTH_PATHS
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\x1c", "\x00", "\r", "\n"])
def test_header_bound_fields_refuse_control_and_line_separator_characters(decode: Decode, char: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subject": f"Hi{char}there"}, "subject"),
        ({"headers": {"X-Tag": f"a{char}b"}}, "headers.X-Tag"),
        ({"categories": [f"cat{char}"]}, "categories.0"),
        ({"to": [{"email": "ann@example.com", "name": f"Ann{char}"}]}, "to.0.name"),
    ]
    for change, field in cases:
        assert field in _refused(decode, send_email_payload(**change)), (change, field)


@BOTH_PATHS
@pytest.mark.parametrize("name", ["X-Custom\n", "X Custom", "X:Custom", "", "Ü-Header", "X-" + "a" * 80])
def test_a_header_name_must_be_a_whole_rfc5322_field_name(decode: Decode, name: str) -> None:
    locs = _refused(decode, send_email_payload(headers={name: "v"}))
    assert any(loc.startswith("headers") for loc in locs)


@BOTH_PATHS
@pytest.mark.parametrize(
    "name",
    ["Sender", "From", "to", "CC", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version",
     "Content-Type", "content-disposition", "Return-Path", "DKIM-Signature", "Resent-From", "Received"],
)  # fmt: skip
def test_reserved_headers_are_refused_with_a_reason(decode: Decode, name: str) -> None:
    with pytest.raises(ValidationError, match="set by Emailer or the provider"):
        decode(send_email_payload(headers={name: "x"}))


@BOTH_PATHS
@pytest.mark.parametrize(
    ("attachment", "field"),
    [
        ({"filename": "a\x00.txt", "content": "aGk="}, "attachments.0.filename"),
        ({"filename": 'a".txt', "content": "aGk="}, "attachments.0.filename"),
        ({"filename": "a\u2028.txt", "content": "aGk="}, "attachments.0.filename"),
        (
            {"filename": "a.png", "content": "aGk=", "disposition": "inline", "content_id": "logo>"},
            "attachments.0.content_id",
        ),
        (
            {"filename": "a.png", "content": "aGk=", "disposition": "inline", "content_id": '"x"'},
            "attachments.0.content_id",
        ),
        (
            {"filename": "a.png", "content": "aGk=", "disposition": "inline", "content_id": "a b"},
            "attachments.0.content_id",
        ),
    ],
)
def test_file_names_and_content_ids_are_refused_raw(
    decode: Decode, attachment: dict[str, Any], field: str
) -> None:
    assert field in _refused(decode, send_email_payload(attachments=[attachment]))


@BOTH_PATHS
def test_template_data_depth_is_bounded_the_same_on_both_paths(decode: Decode) -> None:
    ok = send_email_payload(template_id="d-1", template_data=_nested(MAX_JSON_DEPTH))
    assert decode(ok).template_data is not None
    too_deep = send_email_payload(template_id="d-1", template_data=_nested(MAX_JSON_DEPTH + 1))
    assert "template_data" in _refused(decode, too_deep)
    # Far deeper than any parser's own limit: refused too (on the bus by the JSON parser itself).
    assert _refused(decode, send_email_payload(template_id="d-1", template_data=_nested(250)))


@BOTH_PATHS
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"to": [{"email": "ann@example.com", "name": "Doe; Ann"}]}, "';' or ','"),
        ({"to": [{"email": "ann@example.com", "name": "Doe, Ann"}]}, "';' or ','"),
        ({"bcc": [{"email": "Ann@Example.com"}]}, "more than once"),
        ({"categories": ["a", "a"]}, "distinct"),
        ({"categories": [str(i) for i in range(11)]}, "at most 10"),
        ({"categories": ["c" * 256]}, "at most 255"),
        ({"metadata": {f"k{i}": "v" * 300 for i in range(40)}}, "10000"),
        ({"metadata": {"email_id": "x"}}, "Emailer's own"),
        ({"from": {"email": "bücher@example.com"}}, "ASCII"),
    ],
)
def test_what_sendgrid_would_refuse_is_refused_at_acceptance(
    decode: Decode, change: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        decode(send_email_payload(**change))


@BOTH_PATHS
def test_lone_surrogates_are_refused(decode: Decode) -> None:
    raw = '{"email_id": "e-1", "from": {"email": "a@example.com"}, "to": [{"email": "b@example.com"}], ' \
          '"subject": "x", "text": "bad \\ud800 text"}'  # fmt: skip
    payload = json.loads(raw)
    with pytest.raises(ValidationError):
        decode(payload)


def test_unicode_that_a_header_can_carry_is_accepted() -> None:
    command = SendEmail.model_validate(
        send_email_payload(
            subject="Grüße 🎉 مرحبا\tand a tab",
            to=[{"email": "ann@example.com", "name": "Ånn Ø'Brien"}],
            headers={"X-Tag": "naïve"},
            attachments=[{"filename": "résumé (1).pdf", "content": "aGk="}],
        )
    )
    assert command.subject is not None and "🎉" in command.subject
