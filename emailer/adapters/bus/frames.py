"""The AMQP 0-9-1 frames of one ``basic.publish``, built directly as bytes.

py-amqp builds them through ``basic_publish``: an ``amqp.Message`` object, a
socket poll before every publish (the ``connection.blocked`` check), a
timeout context manager, a lock, and a generic serializer that walks the 14
basic properties and the header table item by item through ``BytesIO``
writes. For a batch of outgoing messages that cost more worker CPU than
anything else in the publish (py-spy on the accept path). Here the same
frames, byte for byte what py-amqp writes for the same properties, come from
a few ``struct`` packs and joins, with the per-route method frame and the
encoded header names remembered.

``publish_frames`` answers None for what it does not handle the same way
(a header value that is not a string, a name or short string over 255
bytes, a content header larger than a frame): the caller publishes that
one through py-amqp, which raises or writes exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from struct import Struct

FRAME_END = b"\xce"
FRAME_OVERHEAD = 8  # type (1), channel (2), size (4) ... frame end (1)
BASIC_CLASS = 60
_PUBLISH_METHOD = Struct(">HHH")  # class, method (basic.publish = 40), reserved short
_FRAME_HEAD = Struct(">BHI")
_CONTENT_HEAD = Struct(">HHQH")  # class, weight, body size, property flags
_LONG = Struct(">I")
_LONGLONG = Struct(">Q")

# Property flags, as py-amqp's ``Message.PROPERTIES`` order gives them (bit 15 first).
_CONTENT_TYPE = 1 << 15
_CONTENT_ENCODING = 1 << 14
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_PRIORITY = 1 << 11
_CORRELATION_ID = 1 << 10
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
_TYPE = 1 << 5
_ALWAYS = _CONTENT_TYPE | _CONTENT_ENCODING | _HEADERS | _DELIVERY_MODE | _PRIORITY | _MESSAGE_ID | _TIMESTAMP


def _shortstr(value: str) -> bytes | None:
    raw = value.encode("utf-8", "surrogatepass")
    return None if len(raw) > 255 else bytes((len(raw),)) + raw


_few_shortstr = functools.lru_cache(maxsize=256)(_shortstr)
"""For values that repeat (content type and encoding, message type)."""


@functools.lru_cache(maxsize=1024)
def _table_key(name: str) -> bytes | None:
    """A header name as a table key followed by the long-string type tag (names repeat: remembered)."""
    key = _shortstr(name)
    return None if key is None else key + b"S"


@functools.lru_cache(maxsize=256)
def method_frame(channel_id: int, exchange: str, routing_key: str, mandatory: bool) -> bytes | None:
    """The whole ``basic.publish`` method frame (the same for every message of a route)."""
    exchange_raw, key_raw = _shortstr(exchange), _shortstr(routing_key)
    if exchange_raw is None or key_raw is None:
        return None
    payload = b"".join(
        (_PUBLISH_METHOD.pack(BASIC_CLASS, 40, 0), exchange_raw, key_raw, b"\x01" if mandatory else b"\x00")
    )
    return _FRAME_HEAD.pack(1, channel_id, len(payload)) + payload + FRAME_END


def header_table(headers: Mapping[str, object]) -> bytes | None:
    """An AMQP field table of string values, with its length; None if a value is not a string."""
    parts: list[bytes] = []
    for name, value in headers.items():
        if not isinstance(value, str) or not isinstance(name, str):
            return None
        key = _table_key(name)
        if key is None:
            return None
        raw = value.encode("utf-8", "surrogatepass")
        parts += (key, _LONG.pack(len(raw)), raw)
    data = b"".join(parts)
    return _LONG.pack(len(data)) + data


def publish_frames(
    *,
    channel_id: int,
    frame_max: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    body: bytes,
    content_type: str,
    content_encoding: str,
    headers: Mapping[str, object],
    delivery_mode: int,
    message_id: str,
    timestamp: int,
    message_type: str | None,
    correlation_id: str | None,
) -> bytes | None:
    """Method, content header and body frames of one publish (priority 0, as kombu sets it).

    None when py-amqp would do something else with these values (see the module's docstring).
    """
    method = method_frame(channel_id, exchange, routing_key, mandatory)
    table = header_table(headers)
    content_type_raw = _few_shortstr(content_type)
    encoding_raw = _few_shortstr(content_encoding)
    message_id_raw = _shortstr(message_id)
    if method is None or table is None or content_type_raw is None or encoding_raw is None:
        return None
    if message_id_raw is None:
        return None
    flags = _ALWAYS
    # In flag order: content type, encoding, headers, delivery mode, priority, [correlation id],
    # message id, timestamp, [type].
    properties: list[bytes] = [content_type_raw, encoding_raw, table, bytes((delivery_mode, 0))]
    if correlation_id:
        correlation_raw = _shortstr(correlation_id)
        if correlation_raw is None:
            return None
        flags |= _CORRELATION_ID
        properties.append(correlation_raw)
    properties += (message_id_raw, _LONGLONG.pack(timestamp))
    if message_type:
        type_raw = _few_shortstr(message_type)
        if type_raw is None:
            return None
        flags |= _TYPE
        properties.append(type_raw)
    chunk = frame_max - FRAME_OVERHEAD
    header_payload = _CONTENT_HEAD.pack(BASIC_CLASS, 0, len(body), flags) + b"".join(properties)
    if len(header_payload) > chunk:
        return None
    frames = [method, _FRAME_HEAD.pack(2, channel_id, len(header_payload)), header_payload, FRAME_END]
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        frames += (_FRAME_HEAD.pack(3, channel_id, len(piece)), piece, FRAME_END)
    return b"".join(frames)
