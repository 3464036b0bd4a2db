"""``emailer.adapters.bus.frames`` writes, byte for byte, what py-amqp's ``basic_publish`` writes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer

from emailer.adapters.bus.frames import publish_frames


def py_amqp_frames(
    frame_max: int, channel_id: int, exchange: str, routing_key: str, mandatory: bool, message: Any
) -> bytes:
    """What py-amqp's frame writer sends for ``basic_publish`` with these arguments."""
    sent: list[bytes] = []
    transport = SimpleNamespace(write=lambda data: sent.append(bytes(data)))
    connection = SimpleNamespace(frame_max=frame_max, bytes_sent=0)
    write = frame_writer(connection, transport)
    from amqp.serialization import dumps

    args = dumps("Bssbb", (0, exchange, routing_key, mandatory, False))
    write(1, channel_id, spec.Basic.Publish, args, message)
    return b"".join(sent)


def case(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "channel_id": 3,
        "frame_max": 131072,
        "exchange": "emailer.events",
        "routing_key": "EmailQueued",
        "mandatory": False,
        "body": b'{"email_id":"e-1","to":["\xc3\xa9@example.com"]}',
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"NServiceBus.MessageId": "m-1", "NServiceBus.CorrelationId": "c-\u00e9"},
        "delivery_mode": 2,
        "message_id": "m-1",
        "timestamp": 1_790_000_000,
        "message_type": "EmailQueued",
        "correlation_id": "c-\u00e9",
    }
    values.update(overrides)
    return values


def amqp_message(values: dict[str, Any]) -> amqp.Message:
    properties = {
        "message_id": values["message_id"],
        "delivery_mode": values["delivery_mode"],
        "timestamp": values["timestamp"],
    }
    if values["message_type"]:
        properties["type"] = values["message_type"]
    if values["correlation_id"]:
        properties["correlation_id"] = values["correlation_id"]
    return amqp.Message(
        values["body"],
        priority=0,
        content_type=values["content_type"],
        content_encoding=values["content_encoding"],
        application_headers=dict(values["headers"]),
        **properties,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"exchange": "", "routing_key": "emailer", "mandatory": True, "message_type": "DispatchEmail"},
        {"correlation_id": None, "message_type": None},
        {"headers": {}},
        {"body": b""},
        {"body": b"x" * 5000, "frame_max": 4096},  # split into body frames
        {"body": b"y" * (4096 - 8), "frame_max": 4096},  # a body exactly one frame long
        {"content_encoding": "binary", "content_type": "application/octet-stream"},
    ],
)
def test_the_same_bytes_as_py_amqp(overrides: dict[str, Any]) -> None:
    values = case(**overrides)
    ours = publish_frames(**values)
    theirs = py_amqp_frames(
        values["frame_max"],
        values["channel_id"],
        values["exchange"],
        values["routing_key"],
        values["mandatory"],
        amqp_message(values),
    )
    assert ours == theirs


@pytest.mark.parametrize(
    "overrides",
    [
        {"headers": {"NServiceBus.Retries": 3}},  # not a string: py-amqp encodes it its own way
        {"headers": {"k" * 256: "v"}},  # a table key over 255 bytes: py-amqp raises
        {"routing_key": "r" * 256},
        {"message_id": "m" * 256},
        {"headers": {"big": "v" * 5000}, "frame_max": 4096},  # the content header does not fit a frame
    ],
)
def test_what_it_does_not_build_the_same_way_is_left_to_py_amqp(overrides: dict[str, Any]) -> None:
    assert publish_frames(**case(**overrides)) is None
