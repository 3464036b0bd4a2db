"""Failed messages read from the error queue: ids, groups as ServicePulse makes them, what a replay strips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from contracts.wire import H, wire_time
from emailer.adapters.bus.failed import FailedMessage, assign_ids, first_frame, groups, matches
from emailer.adapters.bus.replay import EDIT_OF, NotReplayable, cleaned, edited, is_failure_header, replayed
from emailer.signing import SIGNATURE_HEADER
from handlers.errors import InvalidMessage
from tests.failed_messages import failure

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def failed(
    message_id: str = "m-1",
    exc: Exception | None = None,
    message_type: str = "SendEmail",
    when: datetime = T0,
    body: bytes = b'{"email_id": "e-1"}',
    extra: dict[str, str] | None = None,
) -> FailedMessage:
    headers = {
        H.MESSAGE_ID: message_id,
        H.ENCLOSED_MESSAGE_TYPES: message_type,
        H.CORRELATION_ID: "corr-1",
        **failure(exc or InvalidMessage("attachment missing"), "emailer", when),
        **(extra or {}),
    }
    return FailedMessage(message_id=message_id, headers=headers, body=body, content_type="application/json")


def test_the_first_frame_is_where_the_exception_was_raised_without_line_numbers() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/opt/app/emailer/endpoint/pipeline.py", line 10, in handle\n    x()\n'
        '  File "/srv/venv/lib/handlers/send_email.py", line 42, in accept\n    raise InvalidMessage()\n'
        "handlers.errors.InvalidMessage: nope\n"
    )
    assert first_frame(trace) == "handlers/send_email.py:accept"
    chained = (
        "Traceback (most recent call last):\n"
        '  File "/a/b/cause.py", line 1, in inner\n'
        "KeyError: 'x'\n\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/a/handlers/outer.py", line 9, in outer\n'
        "ValueError: y\n"
    )
    assert first_frame(chained) == "handlers/outer.py:outer"
    assert first_frame("") == ""
    assert first_frame("no frames at all") == ""


def test_groups_by_exception_type_message_type_handler_and_first_frame() -> None:
    same_fault = [failed(f"m-{i}", when=T0 + timedelta(minutes=i)) for i in range(3)]
    other_type = failed("m-9", message_type="CancelEmail")
    other_exception = failed("m-8", exc=KeyError("k"))
    other_handler = failed("m-7", extra={"Emailer.Handler": "handlers.other"})
    found = groups([*same_fault, other_type, other_exception, other_handler])
    assert [len(g.messages) for g in found] == [3, 1, 1, 1]
    biggest = found[0]
    assert biggest.first_failure == T0
    assert biggest.last_failure == T0 + timedelta(minutes=2)
    assert biggest.key.exception_type == "handlers.errors.InvalidMessage"
    assert biggest.key.message_type == "SendEmail"
    assert biggest.key.first_frame.endswith(":raised")
    assert len({g.id for g in found}) == 4
    assert groups(same_fault)[0].id == biggest.id  # stable: the key, not the members
    assert json.loads(json.dumps(biggest.as_json()))["count"] == 3
    assert other_handler.handler == "handlers.other"


def test_copies_sharing_a_message_id_get_ids_of_their_own() -> None:
    first = failed("dup", when=T0)
    again = failed("dup", when=T0 + timedelta(seconds=1))
    alone = failed("solo")
    named = assign_ids([first, again, alone])
    assert named[2].id == "solo"
    assert named[0].id != named[1].id
    assert all(m.id.startswith("dup~") for m in named[:2])
    assert matches(named[0], named[0].id) and not matches(named[1], named[0].id)
    assert matches(named[0], "dup") and matches(named[1], "dup")  # ambiguous: the CLI refuses it


def test_a_replay_strips_failure_and_retry_headers_known_and_unknown_and_keeps_the_rest() -> None:
    message = failed(
        extra={
            "NServiceBus.Retries": "3",
            "NServiceBus.Retries.Timestamp": wire_time(T0),
            "NServiceBus.ExceptionInfo.HelpLink": "x",
            "NServiceBus.ExceptionInfo.Data.Anything": "y",
            "NServiceBus.ProcessingMachine": "host",
            "Emailer.ImmediateRetries": "5",
            "Emailer.Handler": "handlers.send_email",
            "Emailer.TruncatedHeaders": "X-Big",
            "Emailer.DelayedRetryLevel": "2",
            "Emailer.FailedAttempts": "9",
            SIGNATURE_HEADER: "hmac-sha256=abc",
            "Emailer.Tenant": "kept",
            "X-Custom": "kept",
        }
    )
    out = replayed(message)
    assert out.message_id == "m-1" and out.body == message.body and out.destination == "emailer"
    assert out.message_type == "SendEmail"
    kept = {H.MESSAGE_ID, H.ENCLOSED_MESSAGE_TYPES, H.CORRELATION_ID, SIGNATURE_HEADER, "Emailer.Tenant"}
    assert set(out.headers) == kept | {"X-Custom"}
    for name in (H.FAILED_Q, H.TIME_OF_FAILURE, H.PROCESSING_ENDPOINT, H.EXCEPTION_STACK_TRACE):
        assert is_failure_header(name)
    for name in (H.TIME_SENT, H.MESSAGE_ID, H.CONVERSATION_ID, SIGNATURE_HEADER):
        assert not is_failure_header(name)
    assert cleaned({"A": "1", H.FAILED_Q: "q"}) == {"A": "1"}


def test_an_edit_has_a_new_id_names_the_original_and_drops_the_old_signature() -> None:
    message = failed(extra={SIGNATURE_HEADER: "hmac-sha256=abc", EDIT_OF: "older"})
    out = edited(message, b'{"email_id": "e-1", "fixed": true}', new_id="m-2")
    assert out.message_id == "m-2"
    assert out.headers[H.MESSAGE_ID] == "m-2"
    assert out.headers[EDIT_OF] == "m-1"
    assert SIGNATURE_HEADER not in out.headers
    assert H.FAILED_Q not in out.headers and out.destination == "emailer"
    assert out.headers[H.CORRELATION_ID] == "corr-1"


def test_a_message_without_failed_q_cannot_go_back() -> None:
    message = FailedMessage(message_id="x", headers={}, body=b"{}", content_type="application/json")
    with pytest.raises(NotReplayable, match="FailedQ"):
        replayed(message)
