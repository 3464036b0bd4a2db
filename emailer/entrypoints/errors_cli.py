"""What ``emailer errors`` does: read the error queue, replay, edit and purge failed messages.

The broker work is ``emailer.adapters.bus.error_queue`` (browse without
changing anything; move one message at a time, confirmed before the ack).
This module picks the messages, checks an edited body against its contract
and says what happened. Every function raises ``ErrorsFailed`` with a one-line
reason for the CLI to print.

Internal commands (``DispatchEmail``, ``RecordDeliveryReports``) are replayed
as they are (same id and body: their signature still verifies) but never
edited: a body Emailer did not write would have to be signed with the
internal key, which is exactly what the signature is there to prevent.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from contracts import Message, message_types
from contracts.wire import H
from emailer.adapters.bus.error_queue import ErrorQueue, Taken
from emailer.adapters.bus.errors import BusError
from emailer.adapters.bus.failed import FailedMessage, Group, assign_ids, groups, matches
from emailer.adapters.bus.replay import NotReplayable, edited, replayed
from emailer.config import Settings
from emailer.endpoint.codec import describe
from emailer.signing import is_internal
from handlers.ports import OutgoingMessage

EMBEDDED = (
    "nothing to do: on the embedded bus (memory://) failed messages live and die with "
    "'emailer run'; 'emailer errors' reads the error queue on RabbitMQ (set EMAILER_BUS_URL)"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
IDS_SHOWN = 5

Progress = Callable[[int], Callable[[], None]]
"""Given how many messages will move, a callback to call once per moved message."""


class ErrorsFailed(Exception):
    """What went wrong, in one line for the operator."""


@dataclass(frozen=True)
class Outcome:
    moved: int
    skipped: list[str]
    """CLI ids of chosen messages left in the queue, with the reason."""


def open_queue(settings: Settings) -> ErrorQueue:
    if settings.embedded_bus:
        raise ErrorsFailed(EMBEDDED)
    errors = ErrorQueue(settings.bus_url, settings.error_queue, crash_at=settings.crash_at)
    try:
        errors.connect()
    except BusError as exc:
        raise ErrorsFailed(str(exc)) from None
    return errors


def browse(errors: ErrorQueue) -> list[FailedMessage]:
    try:
        return assign_ids(errors.browse())
    except BusError as exc:
        raise ErrorsFailed(str(exc)) from None


# -- list / show ----------------------------------------------------------------------


def list_groups(errors: ErrorQueue) -> list[Group]:
    return groups(browse(errors))


def render_groups(queue: str, found: Sequence[Group]) -> str:
    total = sum(len(g.messages) for g in found)
    if not total:
        return f"error queue {queue!r} is empty"
    lines = [f"error queue {queue!r}: {total} failed message(s) in {len(found)} group(s)", ""]
    for group in found:
        ids = [m.id for m in group.messages]
        more = f" … and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else ""
        lines += [
            f"{group.id}  {len(group.messages)} message(s)  "
            f"first {_when(group.first_failure)}  last {_when(group.last_failure)}",
            f"    {group.key.title}",
            f"    e.g. {group.messages[0].exception_message or '(no message)'}",
            f"    ids: {', '.join(ids[:IDS_SHOWN])}{more}",
            "",
        ]
    lines.append("replay a group: emailer errors replay --group <id>; one message: emailer errors show <id>")
    return "\n".join(lines)


def groups_json(queue: str, found: Sequence[Group]) -> str:
    return json.dumps(
        {
            "queue": queue,
            "total": sum(len(g.messages) for g in found),
            "groups": [g.as_json() for g in found],
        },
        indent=2,
    )


def find(messages: Sequence[FailedMessage], wanted: str) -> FailedMessage:
    """The one copy ``wanted`` names; ``ErrorsFailed`` if none does or several do."""
    found = [m for m in messages if matches(m, wanted)]
    if not found:
        raise ErrorsFailed(f"no failed message {wanted!r} in the error queue ('emailer errors list')")
    if len(found) > 1:
        raise ErrorsFailed(
            f"{wanted!r} is in the error queue {len(found)} times; name one copy: "
            + ", ".join(m.id for m in found)
        )
    return found[0]


def render_message(message: FailedMessage) -> str:
    width = max((len(name) for name in message.headers), default=0)
    headers = [
        f"  {name.ljust(width)}  "
        + ("(the stack trace, below)" if name == H.EXCEPTION_STACK_TRACE else value.replace("\n", "\\n"))
        for name, value in message.headers.items()
    ]
    trace = message.stack_trace.rstrip() or "(none)"
    return "\n".join(
        [
            f"{message.id}  {message.message_type or '(no type)'}  failed in {message.failed_queue or '?'} "
            f"at {_when(message.time_of_failure)}",
            f"group {message.group.id}: {message.group.title}",
            f"reason: {message.exception_message or '(none)'}",
            "",
            "headers:",
            *headers,
            "",
            f"body ({message.content_type}, {len(message.body)} bytes):",
            _pretty(message.body),
            "",
            "stack trace:",
            trace,
        ]
    )


# -- replay / purge / edit ----------------------------------------------------------


def replay_selection(
    errors: ErrorQueue, chosen: Sequence[FailedMessage], progress: Progress | None = None
) -> Outcome:
    """Send ``chosen`` (copies from ``browse``) back to their queue, one confirmed move each."""
    skipped: list[str] = []

    def back(message: FailedMessage) -> list[OutgoingMessage]:
        return [replayed(message)]

    return _move(errors, chosen, back, skipped, progress)


def purge_selection(
    errors: ErrorQueue, chosen: Sequence[FailedMessage], progress: Progress | None = None
) -> Outcome:
    return _move(errors, chosen, lambda _m: [], [], progress)


def edit(errors: ErrorQueue, message: FailedMessage, new_body: bytes) -> str:
    """Validate ``new_body`` against the message's contract, send it under a new id, remove the
    original once the broker confirmed the new one. The new message id."""
    body = checked_body(message, new_body)
    new_id = str(uuid.uuid4())
    outcome = _move(errors, [message], lambda m: [edited(m, body, new_id)], [], None)
    if outcome.skipped:
        raise ErrorsFailed(outcome.skipped[0])
    if not outcome.moved:
        raise ErrorsFailed(f"{message.id} is no longer in the error queue (replayed or purged meanwhile)")
    return new_id


def checked_body(message: FailedMessage, new_body: bytes) -> bytes:
    """``new_body`` as it will be sent (compact JSON), or ``ErrorsFailed`` with the field errors."""
    model = check_editable(message)
    kind = message.message_type
    try:
        parsed = json.loads(new_body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ErrorsFailed(f"the new body is not JSON: {exc}") from None
    try:
        model.model_validate(parsed)
    except ValidationError as exc:
        raise ErrorsFailed(f"invalid {kind}, nothing changed: {describe(exc)}") from None
    body = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        unchanged = json.loads(message.body) == parsed
    except (ValueError, UnicodeDecodeError):
        unchanged = False
    if unchanged:
        raise ErrorsFailed("the body is unchanged: nothing sent (to send it as it is, use replay)")
    return body


def check_editable(message: FailedMessage) -> type[Message]:
    """The contract an edit of ``message`` is checked against; ``ErrorsFailed`` if it is not editable."""
    kind = message.message_type
    if is_internal(kind):
        raise ErrorsFailed(
            f"{kind} is an internal command: it is not edited (a body Emailer did not write would need "
            "its signing key); replay it once the fault is fixed, or purge it"
        )
    model = message_types().get(kind)
    if model is None:
        raise ErrorsFailed(f"no contract for message type {kind or '(none)'!r}: it cannot be edited")
    return model


def pretty_body(message: FailedMessage) -> str:
    return _pretty(message.body)


# -- choosing ---------------------------------------------------------------------------


def in_group(messages: Sequence[FailedMessage], group: str) -> list[FailedMessage]:
    """The messages of the group whose id starts with ``group`` (one group, else ``ErrorsFailed``)."""
    ids = {m.group.id for m in messages if m.group.id.startswith(group)}
    if not ids:
        raise ErrorsFailed(f"no group {group!r} in the error queue ('emailer errors list')")
    if len(ids) > 1:
        raise ErrorsFailed(f"{group!r} names {len(ids)} groups: " + ", ".join(sorted(ids)))
    return [m for m in messages if m.group.id in ids]


def older_than(
    messages: Sequence[FailedMessage], age: timedelta, now: datetime | None = None
) -> list[FailedMessage]:
    """Messages that failed more than ``age`` ago (those without a time of failure never match)."""
    cutoff = (now or datetime.now(UTC)) - age
    return [m for m in messages if (t := m.time_of_failure) is not None and t < cutoff]


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or combined (``1d12h``)."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub("", cleaned).strip():
        raise ErrorsFailed(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 7d, 1d12h)")
    return timedelta(seconds=sum(float(number) * _UNITS[unit] for number, unit in parts))


# -- internals ----------------------------------------------------------------------------


def _move(
    errors: ErrorQueue,
    chosen: Sequence[FailedMessage],
    out: Callable[[FailedMessage], list[OutgoingMessage]],
    skipped: list[str],
    progress: Progress | None,
) -> Outcome:
    wanted = list(chosen)
    advance = progress(len(wanted)) if progress is not None else None

    def decide(message: FailedMessage) -> list[OutgoingMessage] | None:
        for index, copy in enumerate(wanted):
            if _same_copy(message, copy):
                del wanted[index]
                try:
                    return out(copy)
                except NotReplayable as exc:
                    skipped.append(str(exc))
                    return None
        return None

    def seen(_message: FailedMessage, moved: bool) -> None:
        if moved and advance is not None:
            advance()

    try:
        taken: Taken = errors.take(decide, limit=len(chosen), on_seen=seen)
    except BusError as exc:
        moved = getattr(exc, "moved", None)
        done = f" ({moved} moved before that)" if moved is not None else ""
        raise ErrorsFailed(f"{exc}{done}; what was not moved is still in the error queue") from None
    return Outcome(taken.moved, skipped)


def _same_copy(message: FailedMessage, copy: FailedMessage) -> bool:
    return message.message_id == copy.message_id and message.fingerprint == copy.fingerprint


def _pretty(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "?"
