"""Our one-pass AMQP content header encodes exactly the bytes py-amqp's own encoder writes."""

from __future__ import annotations

from typing import Any

import amqp
from hypothesis import given
from hypothesis import strategies as st

from emailer.adapters.bus.amqp_message import Message, encode_properties

text = st.text(max_size=300)  # past 255 bytes a short string is py-amqp's business (it refuses)
headers = st.dictionaries(st.text(max_size=40), text, max_size=15)
properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": text,
        "content_encoding": text,
        "application_headers": headers,
        "delivery_mode": st.integers(0, 255),
        "correlation_id": text,
        "message_id": text,
        "timestamp": st.integers(0, 2**63),
        "type": text,
        "reply_to": text,
    },
)


def py_amqp_bytes(props: dict[str, Any]) -> bytes | Exception:
    try:
        return bytes(amqp.Message(b"", **props)._serialize_properties())
    except Exception as exc:  # noqa: BLE001 - the refusal is what we compare
        return exc


@given(properties)
def test_the_content_header_is_byte_for_byte_py_amqps(props: dict[str, Any]) -> None:
    theirs = py_amqp_bytes(props)
    if isinstance(theirs, Exception):
        assert encode_properties(props) is None  # left to py-amqp, which refuses it the same way
        return
    assert Message(b"", **props)._serialize_properties() == theirs


def test_what_the_fast_path_does_not_know_goes_through_py_amqp() -> None:
    odd = {"application_headers": {"retries": 3, "nested": {"a": "b"}, "flag": True}, "priority": 5}
    assert encode_properties(odd) is None
    assert Message(b"", **odd)._serialize_properties() == py_amqp_bytes(odd)


def test_what_emailer_publishes_takes_the_fast_path() -> None:
    ours = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "application_headers": {"NServiceBus.MessageId": "m-1", "NServiceBus.TimeSent": "2026-11-28"},
        "delivery_mode": 2,
        "message_id": "m-1",
        "timestamp": 1_790_000_000,
        "type": "EmailQueued",
        "correlation_id": "c-1",
    }
    assert encode_properties(ours) == py_amqp_bytes(ours)
