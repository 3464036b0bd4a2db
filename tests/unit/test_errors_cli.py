"""What ``emailer errors`` decides without a broker: durations, ages, groups, an edited body."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from contracts.wire import H
from emailer.adapters.bus.failed import FailedMessage, assign_ids
from emailer.entrypoints.errors_cli import (
    ErrorsFailed,
    checked_body,
    find,
    in_group,
    older_than,
    parse_duration,
)
from handlers.errors import InvalidMessage
from tests.factories import send_email_payload
from tests.failed_messages import failure

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def failed(
    message_id: str, body: object, kind: str = "SendEmail", age: timedelta = timedelta(0)
) -> FailedMessage:
    headers = {H.MESSAGE_ID: message_id, H.ENCLOSED_MESSAGE_TYPES: kind,
               **failure(InvalidMessage("x"), "emailer", NOW - age)}  # fmt: skip
    return FailedMessage(message_id, headers, json.dumps(body).encode(), "application/json")


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("2w") == timedelta(days=14)
    for bad in ("", "soon", "7", "7d and more"):
        with pytest.raises(ErrorsFailed, match="not a duration"):
            parse_duration(bad)


def test_older_than_and_groups_by_prefix() -> None:
    messages = assign_ids([failed("a", {}, age=timedelta(days=8)), failed("b", {}, age=timedelta(hours=1))])
    assert [m.id for m in older_than(messages, timedelta(days=7), NOW)] == ["a"]
    group = messages[0].group.id
    assert [m.id for m in in_group(messages, group[:4])] == ["a", "b"]
    with pytest.raises(ErrorsFailed, match="no group"):
        in_group(messages, "zzz")
    with pytest.raises(ErrorsFailed, match="no failed message"):
        find(messages, "c")


def test_an_edited_body_is_checked_against_the_contract() -> None:
    payload = send_email_payload(to=[{"email": "ann@example"}])
    message = failed("m", payload)
    with pytest.raises(ErrorsFailed, match=r"nothing changed: to\.0\.email"):
        checked_body(message, json.dumps(payload).encode())
    with pytest.raises(ErrorsFailed, match="not JSON"):
        checked_body(message, b"{oops")
    fixed = {**payload, "to": [{"email": "ann@example.com"}]}
    assert json.loads(checked_body(message, json.dumps(fixed, indent=4).encode())) == fixed
    valid = failed("v", fixed)
    with pytest.raises(ErrorsFailed, match="unchanged"):
        checked_body(valid, json.dumps(fixed).encode())
    with pytest.raises(ErrorsFailed, match="internal command"):
        checked_body(failed("d", {"email_id": "e"}, kind="DispatchEmail"), b'{"email_id": "f"}')
    with pytest.raises(ErrorsFailed, match="no contract"):
        checked_body(failed("u", {}, kind="Nope"), b"{}")
