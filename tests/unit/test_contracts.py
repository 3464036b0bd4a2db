"""The public contracts: validation at the edge, additive evolution, JSON Schema export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import contracts
from contracts.commands import _json_bytes_at_most
from contracts.schema import write_schemas
from tests.factories import send_email, send_email_payload


def test_every_message_in_the_design_exists() -> None:
    names = set(contracts.message_types())
    assert {
        "SendEmail", "CancelEmail", "DispatchEmail", "RecordDeliveryReports", "EmailQueued",
        "EmailDeliveryStarted", "EmailDeliveryFailed", "EmailRecipientDelivered",
        "EmailRecipientDeliveryFailed", "EmailRecipientDeferred", "EmailRecipientOpened",
        "EmailRecipientClicked", "EmailRecipientComplained", "EmailRecipientUnsubscribed", "EmailCancelled",
    } <= names  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": [{"email": "not-an-address"}]}, "to.0.email"),
        ({"subject": "Hello\r\nBcc: victim@example.com"}, "subject"),
        ({"headers": {"X-Tag": "a\nb"}}, "headers.X-Tag"),
        ({"headers": {"Subject": "again"}}, "headers"),
        ({"from": {"email": "a@example.com", "name": "Evil\nName"}}, "from.name"),
        ({"to": []}, "to"),
        ({"email_id": "has space"}, "email_id"),
    ],
)
def test_bad_send_email_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        send_email(**change)
    locs = {".".join(str(p) for p in e["loc"]) for e in exc.value.errors()}
    assert field in locs


def test_a_body_is_required_and_recipients_are_unique() -> None:
    with pytest.raises(ValidationError, match="give a body"):
        send_email(text=None, html=None)
    with pytest.raises(ValidationError, match="more than once"):
        send_email(cc=[{"email": "ANN@example.com"}])


def test_attachment_needs_exactly_one_source() -> None:
    attachment = {"filename": "a.txt", "content": "aGk=", "sha256": "0" * 64}
    with pytest.raises(ValidationError, match="exactly one"):
        send_email(attachments=[attachment])
    with pytest.raises(ValidationError, match="bare file name"):
        send_email(attachments=[{"filename": "../etc/passwd", "content": "aGk="}])


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    payload = send_email_payload(a_field_from_the_future=1)
    command = contracts.SendEmail.model_validate(payload)
    assert command.categories == [] and command.send_at is None


def test_round_trip_through_json_keeps_the_from_alias() -> None:
    command = send_email()
    again = contracts.SendEmail.model_validate_json(command.model_dump_json(by_alias=True))
    assert again == command
    assert '"from"' in command.model_dump_json(by_alias=True)


def test_schema_files_are_written_for_every_message(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path, internal=True)
    assert {p.name for p in paths} == {f"{n}.schema.json" for n in contracts.message_types()}
    schema = json.loads((tmp_path / "SendEmail.schema.json").read_text())
    assert "from" in schema["properties"] and "email_id" in schema["required"]


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=12))
def test_the_custom_args_bound_is_never_below_the_real_size(strings: dict[str, str]) -> None:
    """SendEmail skips encoding metadata when this bound is within the limit: it must never be under."""
    assert len(
        json.dumps(strings, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ) <= _json_bytes_at_most(strings)
