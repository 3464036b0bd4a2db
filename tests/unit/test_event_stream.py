"""The gateway's event streams (Server-Sent Events from the outbox), served by uvicorn on a loopback port.

A real server, because a stream that stays open is the point: past events
first, then live ones in order; ``Last-Event-ID`` resumes with no repeats; the
read scope is enforced; the all-events stream shows what is published from now on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from httpx_sse import ServerSentEvent, connect_sse

from contracts import CancelEmail, SendEmail
from emailer.adapters.persistence import schema
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from emailer.entrypoints.gateway.app import create_app
from handlers.ports import MessageContext
from handlers.unit_of_work import event_message_id
from tests.factories import send_email_payload

READ = "read-token-0123456789"
SEND = "send-token-0123456789"
WAIT = 10.0


@dataclass
class Gateway:
    url: str
    app: App

    def headers(self, token: str = READ, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **more}

    def send(self, email_id: str) -> None:
        command = SendEmail.model_validate(send_email_payload(email_id=email_id))
        self.app.pipeline.handle_local(command, MessageContext.originating("SendEmail"))

    def cancel(self, email_id: str) -> None:
        command = CancelEmail(email_id=email_id)
        self.app.pipeline.handle_local(command, MessageContext.originating("CancelEmail"))


@pytest.fixture
def gateway(tmp_path: Path, unique_name: str) -> Iterator[Gateway]:
    settings = load_settings(
        var_dir=tmp_path, input_queue=f"{unique_name}.in", events_exchange=f"{unique_name}.events",
        api_tokens=f"read:{READ},send:{SEND}", event_stream_poll=0.05,
    )  # fmt: skip
    application = bootstrap(settings)
    schema.upgrade(application.engine)
    application.bus.connect()
    api = create_app(application)
    server = uvicorn.Server(uvicorn.Config(api, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not (server.started and server.servers):
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Gateway(f"http://127.0.0.1:{port}", application)
    finally:
        api.state.stopping.set()  # as the gateway's SIGTERM does: open streams end
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"
        application.close()


@contextmanager
def listening(url: str, headers: dict[str, str]) -> Iterator[queue.Queue[ServerSentEvent]]:
    """Read the stream in a thread; the events arrive on the queue as the server sends them."""
    arrived: queue.Queue[ServerSentEvent] = queue.Queue()
    opened = threading.Event()
    stop = threading.Event()

    def read() -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(WAIT, read=None)) as client,
            connect_sse(client, "GET", url, headers=headers) as source,
        ):
            assert source.response.status_code == 200
            opened.set()
            for event in source.iter_sse():
                arrived.put(event)
                if stop.is_set():
                    return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(WAIT), "the stream did not open"
    try:
        yield arrived
    finally:
        stop.set()


def take(arrived: queue.Queue[ServerSentEvent], n: int) -> list[ServerSentEvent]:
    return [arrived.get(timeout=WAIT) for _ in range(n)]


def test_past_events_come_first_then_live_ones_in_order(gateway: Gateway) -> None:
    gateway.send("stream-1")  # EmailQueued: in the past when the client connects
    url = f"{gateway.url}/v1/emails/stream-1/events"
    with listening(url, gateway.headers()) as arrived:
        (past,) = take(arrived, 1)
        assert (past.event, past.id) == ("EmailQueued", event_message_id("stream-1", 1))
        assert '"email_id":"stream-1"' in past.data
        gateway.cancel("stream-1")  # EmailCancelled: live
        (live,) = take(arrived, 1)
        assert (live.event, live.id) == ("EmailCancelled", event_message_id("stream-1", 2))
        assert arrived.empty()


def test_an_email_not_stored_yet_is_waited_for(gateway: Gateway) -> None:
    with listening(f"{gateway.url}/v1/emails/later-1/events", gateway.headers()) as arrived:
        gateway.send("later-1")
        assert [e.event for e in take(arrived, 1)] == ["EmailQueued"]


def test_last_event_id_resumes_after_it_with_no_repeats(gateway: Gateway) -> None:
    gateway.send("resume-1")
    gateway.cancel("resume-1")
    url = f"{gateway.url}/v1/emails/resume-1/events?timeout=0.5"
    everything = httpx.get(url, headers=gateway.headers(), timeout=WAIT)
    assert everything.headers["content-type"].startswith("text/event-stream")
    assert everything.text.count("event: ") == 2
    first_id = event_message_id("resume-1", 1)
    resumed = httpx.get(url, headers=gateway.headers(**{"Last-Event-ID": first_id}), timeout=WAIT)
    assert resumed.text.count("event: ") == 1 and "event: EmailCancelled" in resumed.text
    assert first_id not in resumed.text
    last = httpx.get(url, headers=gateway.headers(**{"Last-Event-ID": event_message_id("resume-1", 2)}))
    assert "event: " not in last.text
    unknown = httpx.get(url, headers=gateway.headers(**{"Last-Event-ID": "not-one-of-them"}))
    assert unknown.status_code == 400


def test_streams_need_the_read_scope(gateway: Gateway) -> None:
    gateway.send("locked-1")
    for path in ("/v1/emails/locked-1/events?timeout=0.2", "/v1/events?timeout=0.2"):
        assert httpx.get(gateway.url + path).status_code == 401
        assert httpx.get(gateway.url + path, headers=gateway.headers(SEND)).status_code == 401
        assert httpx.get(gateway.url + path, headers=gateway.headers("x" * 20)).status_code == 401
        assert httpx.get(gateway.url + path, headers=gateway.headers(READ)).status_code == 200


def test_the_all_events_stream_shows_what_is_published_from_now_on(gateway: Gateway) -> None:
    gateway.send("before-1")  # published before the client connects: not shown
    with listening(f"{gateway.url}/v1/events", gateway.headers()) as arrived:
        gateway.send("after-1")
        gateway.cancel("after-1")
        events = take(arrived, 2)
    assert [e.event for e in events] == ["EmailQueued", "EmailCancelled"]
    assert all('"email_id":"after-1"' in e.data for e in events)
    assert events[1].id.endswith(event_message_id("after-1", 2))
    # Resumed after the first one: the second only.
    resumed = httpx.get(
        f"{gateway.url}/v1/events?timeout=0.5", headers=gateway.headers(**{"Last-Event-ID": events[0].id})
    )
    assert resumed.text.count("event: ") == 1 and events[1].id in resumed.text


def test_the_all_events_stream_filters_by_type_and_email(gateway: Gateway) -> None:
    url = f"{gateway.url}/v1/events?type=EmailCancelled&email_id=wanted-1"
    with listening(url, gateway.headers()) as arrived:
        for email_id in ("other-1", "wanted-1"):
            gateway.send(email_id)
            gateway.cancel(email_id)
        (only,) = take(arrived, 1)
        assert only.event == "EmailCancelled" and '"wanted-1"' in only.data
