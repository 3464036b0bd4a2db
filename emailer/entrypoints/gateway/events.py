"""Seeing events over HTTP: Server-Sent Events streams read from the outbox (``event_feed.py``).

* ``GET /v1/emails/{email_id}/events``: the email's events, past ones first, then
  live, in order; each with ``id:`` its stable message id, ``event:`` its type
  and ``data:`` its JSON body as published. Reconnecting with ``Last-Event-ID``
  resumes after that event, with no repeats. An email not stored yet is waited
  for (with RabbitMQ a 202 comes before the worker stores it).
* ``GET /v1/events``: every event from now on (``?type=`` and ``?email_id=``
  narrow it), ``id:`` a cursor ``<µs>-<message id>`` that ``Last-Event-ID``
  resumes after. This is what ``emailer events tail`` reads from ``emailer run``.

Both need the ``read`` scope. ``?timeout=`` (seconds) ends the stream; a comment
line is sent every 15 s while nothing happens, so proxies keep it open. Past
events are those the outbox still holds (``EMAILER_OUTBOX_RETENTION``); older
ones are in the timeline of ``GET /v1/emails/{email_id}``.
"""

import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Protocol

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from emailer.adapters.persistence.event_feed import (
    AllEvents,
    EmailFeed,
    FeedEvent,
    UnknownEvent,
    parse_cursor,
)
from emailer.bootstrap import App
from emailer.entrypoints.gateway.openapi import ERROR_RESPONSES

EMAIL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,99}$"
MAX_TIMEOUT = 24 * 3600.0
_STREAM = {
    "description": "Server-Sent Events: `id:` (see above), `event:` the event's type, `data:` its JSON body",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {k: v for k, v in ERROR_RESPONSES.items() if k in (401, 503)}


class Feed(Protocol):
    def next_events(self) -> list[FeedEvent]: ...


def events_router(app: App, require_read: Callable[..., None], stopping: threading.Event) -> APIRouter:
    """The stream routes; ``stopping`` (set when the server stops) ends every open stream."""
    router = APIRouter(dependencies=[Depends(require_read)])
    interval = app.settings.event_stream_poll

    async def email_feed(
        email_id: Annotated[str, Path(pattern=EMAIL_ID_PATTERN)],
        last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    ) -> tuple[EmailFeed, list[FeedEvent]]:
        # Here, not in the stream: a bad Last-Event-ID (or a database down) is answered before it starts.
        feed = EmailFeed(app.engine, email_id, last_event_id)
        try:
            return feed, await anyio.to_thread.run_sync(feed.next_events)
        except UnknownEvent as exc:
            raise HTTPException(400, detail=str(exc)) from None

    async def all_feed(
        type: Annotated[list[str] | None, Query(description="only these event types")] = None,  # noqa: A002
        email_id: Annotated[str | None, Query(pattern=EMAIL_ID_PATTERN)] = None,
        last_event_id: Annotated[str | None, Header(max_length=300)] = None,
    ) -> tuple[AllEvents, list[FeedEvent]]:
        after = parse_cursor(last_event_id) if last_event_id else None
        feed = AllEvents(app.engine, after=after, types=frozenset(type or ()), email_id=email_id)
        return feed, await anyio.to_thread.run_sync(feed.next_events)

    @router.get(
        "/v1/emails/{email_id}/events",
        response_class=EventSourceResponse,
        responses={
            200: _STREAM,
            400: {"description": "Last-Event-ID is not an event of this email"},
            **_ERRORS,
        },
    )
    async def email_events(
        request: Request,
        started: Annotated[tuple[EmailFeed, list[FeedEvent]], Depends(email_feed)],
        timeout: Annotated[float | None, Query(gt=0, le=MAX_TIMEOUT)] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        """The email's events as Server-Sent Events: past ones first, then live; ``id`` is the message id."""
        feed, first = started
        async for event in _stream(request, stopping, feed, first, interval, timeout, lambda e: e.message_id):
            yield event

    @router.get("/v1/events", response_class=EventSourceResponse, responses={200: _STREAM, **_ERRORS})
    async def all_events(
        request: Request,
        started: Annotated[tuple[AllEvents, list[FeedEvent]], Depends(all_feed)],
        timeout: Annotated[float | None, Query(gt=0, le=MAX_TIMEOUT)] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        """Every event published from now on (or after ``Last-Event-ID``); ``id`` is a resumable cursor."""
        feed, first = started
        async for event in _stream(request, stopping, feed, first, interval, timeout, lambda e: e.cursor):
            yield event

    return router


async def _stream(
    request: Request,
    stopping: threading.Event,
    feed: Feed,
    first: list[FeedEvent],
    interval: float,
    timeout: float | None,
    event_id: Callable[[FeedEvent], str],
) -> AsyncIterator[ServerSentEvent]:
    deadline = None if timeout is None else time.monotonic() + timeout
    batch = first
    while True:
        for event in batch:
            yield ServerSentEvent(raw_data=event.body, event=event.message_type, id=event_id(event))
        if stopping.is_set() or await request.is_disconnected():
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        await anyio.sleep(interval if deadline is None else min(interval, deadline - time.monotonic()))
        batch = await anyio.to_thread.run_sync(feed.next_events)
