"""A message in the error queue, read: its id for people, its failure, the group it belongs to.

Groups follow ServicePulse's "Exception Type and Stack Trace" classifier
(ServiceControl's ``ExceptionTypeAndStackTraceFailureClassifier``: the
exception type and the first frame of the stack trace, i.e. where the
exception was thrown, without line numbers so an unrelated edit does not split
a group) together with its "Message Type" classifier and the handler, so one
group is one fault in one place for one kind of message. A Python trace prints
the innermost frame last, so "first" here is the last ``File ...`` line of the
last traceback block. The group id is a short hash of that key: stable across
runs and machines (paths are cut to their last two parts).

Ids for people: a failed message is named by its message id. The same id can
be in the queue more than once (a message that failed, was replayed and failed
again; a duplicate delivery that failed twice); then each copy is named
``<message id>~<8 hex of its content>``, and the bare id is ambiguous.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from contracts.wire import H, type_name
from emailer.adapters.bus.delivery import body_hash_id

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]*)", line \d+, in (?P<function>.+?)\s*$')
_TRACEBACK = "Traceback (most recent call last):"
HANDLER_HEADER_HINT = "handler"
"""A failure header naming the handler (``Emailer.Handler``, ``...HandlerType``): matched by name."""


@dataclass(frozen=True)
class FailedMessage:
    """One copy in the error queue, as the broker holds it (body and headers untouched)."""

    message_id: str
    headers: Mapping[str, str]
    body: bytes
    content_type: str
    amqp_type: str = ""
    id: str = ""
    """The CLI's name for this copy (``assign_ids``); the message id unless it is ambiguous."""

    @property
    def fingerprint(self) -> str:
        """8 hex of the copy's headers and body: tells apart copies sharing a message id."""
        digest = hashlib.sha256(json.dumps(sorted(self.headers.items())).encode("utf-8", "surrogatepass"))
        digest.update(self.body)
        return digest.hexdigest()[:8]

    @property
    def message_type(self) -> str:
        raw = self.headers.get(H.ENCLOSED_MESSAGE_TYPES, "") or self.amqp_type
        return type_name(raw) if raw.strip() else ""

    @property
    def failed_queue(self) -> str:
        return self.headers.get(H.FAILED_Q, "")

    @property
    def exception_type(self) -> str:
        return self.headers.get(H.EXCEPTION_TYPE, "")

    @property
    def exception_message(self) -> str:
        return self.headers.get(H.EXCEPTION_MESSAGE, "")

    @property
    def stack_trace(self) -> str:
        return self.headers.get(H.EXCEPTION_STACK_TRACE, "")

    @property
    def handler(self) -> str:
        return handler_of(self.headers)

    @property
    def time_of_failure(self) -> datetime | None:
        return parse_wire_time(self.headers.get(H.TIME_OF_FAILURE, ""))

    @property
    def first_frame(self) -> str:
        return first_frame(self.stack_trace)

    @property
    def group(self) -> GroupKey:
        return GroupKey(self.exception_type, self.message_type, self.handler, self.first_frame)


@dataclass(frozen=True)
class GroupKey:
    exception_type: str
    message_type: str
    handler: str
    first_frame: str

    @property
    def id(self) -> str:
        text = "\n".join((self.exception_type, self.message_type, self.handler, self.first_frame))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]

    @property
    def title(self) -> str:
        exception = self.exception_type.rsplit(".", 1)[-1] or "(no exception)"
        where = f" at {self.first_frame}" if self.first_frame else ""
        handler = f" by {self.handler}" if self.handler else ""
        return f"{exception}{where}: {self.message_type or '(no type)'}{handler}"


@dataclass
class Group:
    """The failed messages of one group, with the first and last time one failed."""

    key: GroupKey
    messages: list[FailedMessage] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.key.id

    @property
    def first_failure(self) -> datetime | None:
        times = [t for m in self.messages if (t := m.time_of_failure) is not None]
        return min(times) if times else None

    @property
    def last_failure(self) -> datetime | None:
        times = [t for m in self.messages if (t := m.time_of_failure) is not None]
        return max(times) if times else None

    def as_json(self) -> dict[str, object]:
        first, last = self.first_failure, self.last_failure
        return {
            "id": self.id,
            "title": self.key.title,
            "exception_type": self.key.exception_type,
            "message_type": self.key.message_type,
            "handler": self.key.handler,
            "first_frame": self.key.first_frame,
            "count": len(self.messages),
            "first_failure": first.isoformat() if first else None,
            "last_failure": last.isoformat() if last else None,
            "example_exception_message": self.messages[0].exception_message if self.messages else "",
            "message_ids": [m.id for m in self.messages],
        }


def groups(messages: Iterable[FailedMessage]) -> list[Group]:
    """Messages grouped by ``GroupKey``; the largest group first, then the most recent."""
    by_key: dict[GroupKey, Group] = {}
    for message in messages:
        by_key.setdefault(message.group, Group(message.group)).messages.append(message)
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(by_key.values(), key=lambda g: (-len(g.messages), -(g.last_failure or floor).timestamp()))


def assign_ids(messages: Sequence[FailedMessage]) -> list[FailedMessage]:
    """Each copy with its CLI id: the message id, or ``id~fingerprint`` where the id is shared."""
    counts: dict[str, int] = {}
    for message in messages:
        counts[message.message_id] = counts.get(message.message_id, 0) + 1
    return [
        replace(m, id=m.message_id if counts[m.message_id] == 1 else f"{m.message_id}~{m.fingerprint}")
        for m in messages
    ]


def matches(message: FailedMessage, wanted: str) -> bool:
    """Does the CLI id ``wanted`` name this copy? (``id~fingerprint`` or the bare message id)."""
    if "~" in wanted and wanted == f"{message.message_id}~{message.fingerprint}":
        return True
    return wanted in (message.id, message.message_id)


def handler_of(headers: Mapping[str, str]) -> str:
    """The handler a failure header names, whatever the header is called (``...Handler...``)."""
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(("emailer.", "nservicebus.")) and HANDLER_HEADER_HINT in lowered:
            return value
    return ""


def first_frame(stack_trace: str) -> str:
    """Where the exception was thrown: ``dir/file.py:function`` of the innermost frame, or ''."""
    if not stack_trace.strip():
        return ""
    last_block = stack_trace.rsplit(_TRACEBACK, 1)[-1]
    frames = [m for line in last_block.splitlines() if (m := _FRAME.match(line))]
    if not frames:
        return ""
    innermost = frames[-1]
    path = "/".join(innermost["path"].replace("\\", "/").rsplit("/", 2)[-2:])
    return f"{path}:{innermost['function']}"


def parse_wire_time(value: str) -> datetime | None:
    """NServiceBus's ``yyyy-MM-dd HH:mm:ss:ffffff Z`` (or ISO 8601) as an aware datetime, else None."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S:%f Z").replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_transport(
    headers: Mapping[str, object] | None, properties: Mapping[str, object], body: bytes
) -> FailedMessage:
    """A ``FailedMessage`` from what the broker handed over (ids as ``Delivery`` finds them)."""
    text = {str(k): _text(v) for k, v in (headers or {}).items()}
    message_id = (
        text.get(H.MESSAGE_ID, "").strip() or _text(properties.get("message_id") or "") or body_hash_id(body)
    )
    return FailedMessage(
        message_id=message_id,
        headers=text,
        body=body,
        content_type=_text(properties.get("content_type") or "") or "application/octet-stream",
        amqp_type=_text(properties.get("type") or ""),
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
