"""Failed messages for tests of the error queue: built with real exceptions, put where a worker puts them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kombu.messaging import Producer

from contracts.wire import H
from emailer.adapters.bus.failure import failure_headers


def raised(exc: Exception) -> Exception:
    """``exc`` with a traceback (as a handler's would have)."""
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001 - that is the point
        return caught


def failure(
    exc: Exception, failed_queue: str, when: datetime | None = None, reason: str | None = None
) -> dict[str, str]:
    return failure_headers(
        failed_queue=failed_queue,
        reason=reason if reason is not None else str(exc),
        exc=raised(exc),
        now=when or datetime.now(UTC),
    )


def put_failed(
    channel: Any,
    error_queue: str,
    *,
    message_id: str,
    body: Mapping[str, Any] | bytes,
    failed_queue: str,
    exc: Exception | None = None,
    message_type: str = "SendEmail",
    when: datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Publish a message as a worker leaves it in the error queue.

    Use a channel of a ``confirm_publish`` connection, so the message is in the
    queue when this returns.
    """
    headers = {
        H.MESSAGE_ID: message_id,
        H.ENCLOSED_MESSAGE_TYPES: message_type,
        H.CORRELATION_ID: f"corr-{message_id}",
        **failure(exc or ValueError("boom"), failed_queue, when),
        **(extra or {}),
    }
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    Producer(channel).publish(
        data, exchange="", routing_key=error_queue, delivery_mode=2, content_type="application/json",
        content_encoding="utf-8", message_id=message_id, type=message_type, headers=headers,
    )  # fmt: skip
