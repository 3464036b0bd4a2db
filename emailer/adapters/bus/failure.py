"""The NServiceBus failure headers put on a message sent to the error queue.

They never carry the data of a message: the stack trace is formatted by
``emailer.redaction.format_traceback`` (no SQL statement parameters, no driver
DETAIL lines), and the reason and the trace are bounded in size.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from contracts.wire import ENDPOINT, H, wire_time
from emailer.redaction import format_traceback

MAX_STACK_TRACE_BYTES = 16 * 1024
MAX_REASON_CHARS = 2000
_TRUNCATED = "...(truncated)\n"


def failure_headers(
    *,
    failed_queue: str,
    reason: str,
    exc: BaseException | None,
    now: datetime,
) -> dict[str, str]:
    """What failed where, when and why; ``reason`` is the human-readable message."""
    return {
        H.FAILED_Q: failed_queue,
        H.TIME_OF_FAILURE: wire_time(now),
        H.EXCEPTION_TYPE: _type_name(exc),
        H.EXCEPTION_MESSAGE: _bounded(reason),
        H.EXCEPTION_SOURCE: ENDPOINT,
        H.EXCEPTION_STACK_TRACE: _stack_trace(exc),
        H.PROCESSING_ENDPOINT: ENDPOINT,
    }


def merge_headers(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """Later layers win; ``None`` layers are skipped."""
    merged: dict[str, str] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


def _bounded(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _type_name(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _stack_trace(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = format_traceback(exc)
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_STACK_TRACE_BYTES:
        return text
    # Keep the end: the innermost frames and the exception line say the most.
    budget = MAX_STACK_TRACE_BYTES - len(_TRUNCATED)
    tail = encoded[-budget:].decode("utf-8", errors="ignore")
    return _TRUNCATED + tail
