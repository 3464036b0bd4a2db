"""The copy of a failed message that goes to the error queue, bounded so that no content can stop it.

Nothing a sender put in a message may make moving it to the error queue fail:
the message would be requeued and redelivered for ever. So the copy

* keeps the body untouched (it is what a replay sends back);
* puts into AMQP short-string properties (``message_id``, ``type``,
  ``correlation_id``, ``content_type``: at most 255 bytes of UTF-8) only what
  fits, ``sha256:<hex>`` of the value otherwise (``short``); the original
  stays in its NServiceBus header;
* keeps header names within 255 bytes and the whole header table within
  ``budget`` bytes (AMQP's content header must fit in ONE frame, 131 072
  bytes on a default RabbitMQ): the failure headers are kept whole, and the
  largest of the sender's headers are cut to an excerpt (with their size and
  sha256), or dropped if that is not enough, until it fits. The
  ``Emailer.TruncatedHeaders`` header names what was cut or dropped.

``minimal_copy`` is the fallback when the broker refuses even that: the body,
the failure headers and the sender's message id, nothing else. ``resend_copy``
is the same message sent back for a retry (unbounded: it came in that way).
Both copies drop what RabbitMQ added when a delay queue dead-lettered it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kombu.message import Message

from contracts.wire import H
from emailer.adapters.bus.delivery import Delivery
from handlers.ports import OutgoingMessage

SHORTSTR_BYTES = 255
HEADER_BUDGET = 64 * 1024
"""Bytes the header table of an error copy may take (RabbitMQ's default frame is 128 KiB)."""
TRUNCATED_HEADERS = "Emailer.TruncatedHeaders"
EXCERPT_CHARS = 200
_MARKER_CHARS = 1000  # the TruncatedHeaders value itself is bounded (listed[:999] + "…")
FALLBACK_CONTENT_TYPE = "application/octet-stream"


def short(value: str) -> str:
    """``value`` if it fits an AMQP short string, else ``sha256:<hex>`` of it (stable, 71 bytes)."""
    if len(value.encode("utf-8", "surrogatepass")) <= SHORTSTR_BYTES:
        return value
    return "sha256:" + _sha256(value)


def short_or(value: str, fallback: str) -> str:
    """``value`` if it fits an AMQP short string, else ``fallback`` (for a content type)."""
    return value if len(value.encode("utf-8", "surrogatepass")) <= SHORTSTR_BYTES else fallback


def header_name(name: str) -> str:
    """A header name that fits an AMQP table key: cut, with a hash of the whole, if it does not."""
    if len(name.encode("utf-8", "surrogatepass")) <= SHORTSTR_BYTES:
        return name
    return f"{_cut_bytes(name, 160)}…sha256:{_sha256(name)[:32]}"


def table_size(headers: Mapping[str, str]) -> int:
    """Bytes an AMQP field table of string values takes on the wire (as py-amqp writes it)."""
    return sum(_entry_size(name, value) for name, value in headers.items())


def fit_headers(
    theirs: Mapping[str, str], ours: Mapping[str, str], budget: int = HEADER_BUDGET
) -> dict[str, str]:
    """The sender's headers, then ours (ours win and are never cut), within ``budget`` bytes."""
    headers: dict[str, str] = {}
    cut: list[str] = []
    for name, value in theirs.items():
        fitted = header_name(name)
        if fitted != name:
            cut.append(fitted)
        headers[fitted] = value
    headers.update(ours)
    reserve = _entry_size(TRUNCATED_HEADERS, "x" * _MARKER_CHARS)
    size = table_size(headers)
    candidates = sorted(
        (name for name in headers if name not in ours),
        key=lambda name: _entry_size(name, headers[name]),
        reverse=True,
    )
    for name in candidates:  # largest first: cut to an excerpt
        if size + reserve <= budget:
            break
        value = headers[name]
        excerpt = _excerpt(value)
        if len(excerpt) < len(value):
            size += _entry_size(name, excerpt) - _entry_size(name, value)
            headers[name] = excerpt
            cut.append(name)
    for name in candidates:  # still too many: drop
        if size + reserve <= budget:
            break
        size -= _entry_size(name, headers.pop(name))
        cut.append(name)
    if cut:
        listed = ", ".join(dict.fromkeys(cut))
        headers[TRUNCATED_HEADERS] = listed if len(listed) <= _MARKER_CHARS else listed[:999] + "…"
    return headers


def error_copy(
    *,
    message_id: str,
    message_type: str,
    body: bytes,
    headers: Mapping[str, str],
    failure: Mapping[str, str],
    content_type: str,
    error_queue: str,
    budget: int = HEADER_BUDGET,
) -> OutgoingMessage:
    """The whole copy: the body untouched, the headers fitted, ``failure`` headers whole."""
    return OutgoingMessage(
        message_id=short(message_id),
        message_type=short(message_type),
        body=body,
        headers=fit_headers(headers, failure, budget),
        intent="Send",
        destination=error_queue,
        content_type=short_or(content_type, FALLBACK_CONTENT_TYPE),
    )


def minimal_copy(copy: OutgoingMessage, message_id: str, failure: Mapping[str, str]) -> OutgoingMessage:
    """The last resort: the body, ``failure`` and the message id (cut to an excerpt if huge)."""
    return OutgoingMessage(
        message_id=copy.message_id,
        message_type=copy.message_type,
        body=copy.body,
        headers={
            **{name: _excerpt(value) for name, value in failure.items()},
            H.MESSAGE_ID: _excerpt(message_id),
            TRUNCATED_HEADERS: "(all but these)",
        },
        intent="Send",
        destination=copy.destination,
        content_type=FALLBACK_CONTENT_TYPE,
    )


def _entry_size(name: str, value: str) -> int:
    # key: 1-byte length + bytes; value: type octet + 4-byte length + bytes
    return 1 + _size(name) + 1 + 4 + _size(value)


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _excerpt(value: str) -> str:
    if len(value) <= EXCERPT_CHARS + 100:
        return value
    size = len(value.encode("utf-8", "surrogatepass"))
    return f"{value[:EXCERPT_CHARS]}…[cut by Emailer: {size} bytes, sha256:{_sha256(value)}]"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _cut_bytes(value: str, limit: int) -> str:
    return value.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


_BROKER_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-")


def error_copy_of(
    delivery: Delivery, failure: Mapping[str, str], error_queue: str, budget: int
) -> OutgoingMessage:
    """``error_copy`` of a delivery as it came: its AMQP properties, body and headers."""
    message: Message | None = delivery._message
    props: Mapping[str, Any] = message.properties if message is not None else {}
    return error_copy(
        message_id=_text(props.get("message_id")) or delivery.message_id,
        message_type=_text(props.get("type")),
        body=delivery.body,
        headers=_without_broker_headers(delivery.headers),
        failure=failure,
        content_type=(message.content_type if message else None) or FALLBACK_CONTENT_TYPE,
        error_queue=error_queue,
        budget=budget,
    )


def resend_copy(delivery: Delivery, headers: Mapping[str, str], destination: str) -> OutgoingMessage:
    """The delivery again, to ``destination``, with ``headers`` replacing its own."""
    message: Message | None = delivery._message
    props: Mapping[str, Any] = message.properties if message is not None else {}
    return OutgoingMessage(
        message_id=_text(props.get("message_id")) or delivery.message_id,
        message_type=_text(props.get("type")),
        body=delivery.body,
        headers={**_without_broker_headers(delivery.headers), **headers},
        intent="Send",
        destination=destination,
        content_type=(message.content_type if message is not None else None) or FALLBACK_CONTENT_TYPE,
    )


def _without_broker_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The message's headers without what RabbitMQ added when a delay queue dead-lettered it."""
    return {name: value for name, value in headers.items() if not name.startswith(_BROKER_HEADER_PREFIXES)}


def _text(value: object) -> str:
    """An AMQP property as text ('' if unset)."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
