"""The NServiceBus failure headers put on a message sent to the error queue."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import UTC, datetime

ENDPOINT_NAME = "emailer"
MAX_STACK_TRACE_BYTES = 16 * 1024
_TRUNCATED = "...(truncated)\n"


def nsb_time(moment: datetime) -> str:
    """NServiceBus wire format for times: ``yyyy-MM-dd HH:mm:ss:ffffff Z`` in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined UTC time")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S:%f") + " Z"


def failure_headers(
    *,
    failed_queue: str,
    reason: str,
    exc: BaseException | None,
    now: datetime,
) -> dict[str, str]:
    """What failed where, when and why; ``reason`` is the human-readable message."""
    return {
        "NServiceBus.FailedQ": failed_queue,
        "NServiceBus.TimeOfFailure": nsb_time(now),
        "NServiceBus.ExceptionInfo.ExceptionType": _type_name(exc),
        "NServiceBus.ExceptionInfo.Message": reason,
        "NServiceBus.ExceptionInfo.Source": ENDPOINT_NAME,
        "NServiceBus.ExceptionInfo.StackTrace": _stack_trace(exc),
        "NServiceBus.ProcessingEndpoint": ENDPOINT_NAME,
    }


def merge_headers(*layers: Mapping[str, object] | None) -> dict[str, object]:
    """Later layers win; ``None`` layers are skipped."""
    merged: dict[str, object] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


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
    text = "".join(traceback.format_exception(exc))
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_STACK_TRACE_BYTES:
        return text
    # Keep the end: the innermost frames and the exception line say the most.
    budget = MAX_STACK_TRACE_BYTES - len(_TRUNCATED)
    tail = encoded[-budget:].decode("utf-8", errors="ignore")
    return _TRUNCATED + tail
