# mypy: allow-untyped-calls
"""An AMQP message whose content header (properties and headers) is encoded in one pass.

py-amqp encodes a message's properties field by field through its generic
``dumps`` and writes the header table item by item through ``BytesIO`` and
``struct.pack``: for our ~11 NServiceBus headers that was the largest single
cost of publishing a batch. ``Message`` encodes the same bytes (a unit test
compares them with py-amqp's own encoding) directly, for what Emailer sends:
string, octet and long-long properties, a table of string headers. Anything
else (a non-string header, a value too long for a short string) goes through
py-amqp's encoder unchanged.
"""

from __future__ import annotations

from struct import pack
from typing import Any

import amqp

_SHORT = 255
_FLAG = {key: 1 << (15 - i) for i, (key, _) in enumerate(amqp.Message.PROPERTIES)}
_ONE_FLAG_WORD = len(amqp.Message.PROPERTIES) <= 15  # true of AMQP 0-9-1's 14 basic properties


class Message(amqp.Message):  # type: ignore[misc]  # py-amqp has no type hints
    def _serialize_properties(self) -> bytes:
        encoded = encode_properties(self.properties)
        return encoded if encoded is not None else bytes(super()._serialize_properties())


def encode_properties(properties: dict[str, Any]) -> bytes | None:
    """The property flags and list as py-amqp writes them; None for anything off the fast path."""
    if not _ONE_FLAG_WORD:
        return None
    flags = 0
    parts: list[bytes] = []
    for key, kind in amqp.Message.PROPERTIES:
        value = properties.get(key)
        if value is None:
            continue
        flags |= _FLAG[key]
        if kind == "s":
            part = _short(value)
            if part is None:
                return None
            parts.append(part)
        elif kind == "F":
            table = _table(value)
            if table is None:
                return None
            parts.append(pack(">I", len(table)))
            parts.append(table)
        elif kind == "o" and type(value) is int and 0 <= value <= 0xFF:
            parts.append(pack("B", value))
        elif kind == "L" and type(value) is int and 0 <= value < 1 << 64:
            parts.append(pack(">Q", value))
        else:
            return None
    return pack(">H", flags) + b"".join(parts)


def _short(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    encoded = value.encode("utf-8", "surrogatepass")
    return bytes((len(encoded),)) + encoded if len(encoded) <= _SHORT else None


def _table(headers: Any) -> bytes | None:
    if not isinstance(headers, dict):
        return None
    parts: list[bytes] = []
    for key, value in headers.items():
        name = _short(key)
        if name is None or not isinstance(value, str):
            return None
        encoded = value.encode("utf-8", "surrogatepass")
        parts.append(name)
        parts.append(b"S" + pack(">I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)
