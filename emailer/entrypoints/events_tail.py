"""``emailer events tail``: print events as they are published.

On RabbitMQ it binds a short-lived exclusive queue (gone when it disconnects)
to the events exchange, with one routing key per ``--type`` (or ``#``), and
prints what arrives. The embedded bus of ``emailer run`` lives inside that
process, so there it reads the gateway's ``GET /v1/events`` stream (Server-Sent
Events from the outbox) instead; ``--gateway-url`` / ``EMAILER_GATEWAY_URL``
and ``EMAILER_API_TOKEN`` say where and as whom.

One line per event: ``occurred_at  Type  email_id  message id`` (``--json``: the
type, message id, correlation id and body as one JSON object per line).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from contracts.wire import H
from emailer.config import Settings


class TailError(Exception):
    """The events cannot be read (gateway or broker not answering); the message says which."""


@dataclass(frozen=True)
class Seen:
    message_id: str
    message_type: str
    correlation_id: str | None
    body: str

    @property
    def email_id(self) -> str | None:
        try:
            value = json.loads(self.body).get("email_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def line(self, as_json: bool) -> str:
        if as_json:
            data = {
                "type": self.message_type,
                "message_id": self.message_id,
                "correlation_id": self.correlation_id,
                "event": json.loads(self.body),
            }
            return json.dumps(data, ensure_ascii=False)
        try:
            occurred = json.loads(self.body).get("occurred_at", "")
        except (ValueError, AttributeError):
            occurred = ""
        return f"{occurred}  {self.message_type}  {self.email_id or '-'}  {self.message_id}"


@dataclass(frozen=True)
class Filter:
    email_id: str | None
    types: tuple[str, ...]
    count: int | None
    timeout: float | None


def tail(
    settings: Settings,
    wanted: Filter,
    print_line: Callable[[str], None],
    as_json: bool,
    on_ready: Callable[[str], None] = lambda where: None,
) -> int:
    """Print events until ``count`` were printed, ``timeout`` passed, or Ctrl-C; how many were printed.

    ``on_ready(where)`` is called once listening: events published from then on are printed.
    """
    if settings.embedded_bus:
        source = _from_gateway(settings, wanted, on_ready)
    else:
        source = _from_broker(settings, wanted, on_ready)
    printed = 0
    try:
        for seen in source:
            if wanted.email_id is not None and seen.email_id != wanted.email_id:
                continue
            if wanted.types and seen.message_type not in wanted.types:
                continue
            print_line(seen.line(as_json))
            printed += 1
            if wanted.count is not None and printed >= wanted.count:
                break
    except KeyboardInterrupt:
        pass
    return printed


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _from_gateway(settings: Settings, wanted: Filter, on_ready: Callable[[str], None]) -> Iterator[Seen]:
    from httpx_sse import connect_sse

    base = (settings.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")
    params: list[tuple[str, str | float]] = [("type", t) for t in wanted.types]
    if wanted.email_id:
        params.append(("email_id", wanted.email_id))
    if wanted.timeout is not None:
        params.append(("timeout", wanted.timeout))
    token = settings.api_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client,
            connect_sse(client, "GET", f"{base}/v1/events", params=params, headers=headers) as source,
        ):
            if source.response.status_code != 200:
                source.response.read()
                raise TailError(f"{base}/v1/events answered {source.response.status_code}: "
                                f"{source.response.text[:200]}")  # fmt: skip
            on_ready(f"the gateway at {base}")
            for event in source.iter_sse():
                if not event.event or event.event == "message":
                    continue
                _, _, message_id = event.id.partition("-")
                yield Seen(message_id or event.id, event.event, None, event.data)
    except httpx.HTTPError as exc:
        raise TailError(f"cannot read events from the gateway at {base}: {exc}") from None


def _from_broker(settings: Settings, wanted: Filter, on_ready: Callable[[str], None]) -> Iterator[Seen]:
    from amqp.exceptions import AMQPError
    from kombu.connection import Connection
    from kombu.entity import Exchange, Queue, binding
    from kombu.exceptions import OperationalError
    from kombu.messaging import Consumer

    exchange = Exchange(settings.events_exchange, type="topic", durable=True, auto_delete=False)
    queue = Queue(
        f"emailer.tail.{uuid.uuid4().hex[:12]}",
        bindings=[binding(exchange, routing_key=key) for key in (wanted.types or ("#",))],
        exclusive=True,
        auto_delete=True,
        durable=False,
    )
    arrived: list[Seen] = []

    def on_message(body: Any, message: Any) -> None:
        headers = {str(k): _text(v) for k, v in (message.headers or {}).items()}
        properties = message.properties or {}
        arrived.append(
            Seen(
                message_id=headers.get(H.MESSAGE_ID) or _text(properties.get("message_id", "")),
                message_type=headers.get(H.ENCLOSED_MESSAGE_TYPES) or _text(properties.get("type", "")),
                correlation_id=headers.get(H.CORRELATION_ID),
                body=message.body.decode("utf-8", "replace")
                if isinstance(message.body, bytes)
                else str(message.body),
            )
        )
        message.ack()

    deadline = _deadline(wanted.timeout)
    try:
        with Connection(settings.bus_url, connect_timeout=10) as connection:
            connection.ensure_connection(max_retries=2)
            with Consumer(connection.channel(), queues=[queue], callbacks=[on_message], accept=None):
                on_ready(f"the exchange {settings.events_exchange} (queue {queue.name})")
                while deadline is None or time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.5)
                    while arrived:
                        yield arrived.pop(0)
    except (OSError, OperationalError, AMQPError) as exc:
        raise TailError(f"cannot read events from the broker: {type(exc).__name__}: {exc}") from None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
