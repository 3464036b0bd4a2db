"""The sandbox posts SendGrid's signed Event Webhook batches: stories by address, batching, retries, modes."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from emailer.adapters.webhooks.sendgrid_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureVerifier,
    load_public_key,
)
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import _bind, _url, _wait_until_serving, running_sandbox
from emailer.sandbox.webhooks import WebhookMode, WebhookOptions
from tests.e2e.harness import wait_until

SIX = ["bounce@example.com", "blocked@example.com", "defer-then-deliver@example.com", "drop@example.com",
       "open-click@example.com", "ana@example.com"]  # fmt: skip


@dataclass
class Receiver:
    """A webhook endpoint that records every post; ``refuse`` posts are answered 503 first."""

    url: str = ""
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    refuse: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for _, body in self.posts for e in json.loads(body)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    api = FastAPI()

    @api.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        with rec.lock:
            if rec.refuse > 0:
                rec.refuse -= 1
                return Response(status_code=503)
            rec.posts.append((dict(request.headers), body))
        return Response(status_code=200)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    sock = _bind("127.0.0.1", 0)
    rec.url = _url("127.0.0.1", sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_until_serving(rec.url, thread)
    yield rec
    server.should_exit = True
    thread.join(10)
    sock.close()


def mail(recipients: list[str], email_id: str = "order-7") -> dict[str, Any]:
    return {
        "personalizations": [
            {"to": [{"email": r} for r in recipients], "custom_args": {"email_id": email_id}}
        ],
        "from": {"email": "shop@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
        "custom_args": {"email_id": email_id},
        "categories": ["orders"],
    }


def send(url: str, key: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{url}/v3/mail/send", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 202
    return response.headers["X-Message-Id"]


@pytest.fixture
def api_key() -> str:
    return f"SG.{secrets.token_urlsafe(16)}"


def test_accepted_mail_yields_signed_sendgrid_shaped_events(receiver: Receiver, api_key: str) -> None:
    options = WebhookOptions(url=f"{receiver.url}/hook", batch_interval=0.05)
    with running_sandbox(api_key, webhook=options) as sandbox, SandboxClient(sandbox.url, api_key) as control:
        message_id = send(sandbox.url, api_key, mail(SIX))
        wait_until(lambda: len(receiver.events()) >= 14, 10, "the sandbox's webhook events")
        public_key = control.webhook()["public_key"]
    verifier = SignatureVerifier([load_public_key(public_key)])
    for headers, body in receiver.posts:  # every post verifies as SendGrid's would
        verifier.verify(
            body, headers[SIGNATURE_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()], datetime.now(UTC)
        )
    events = receiver.events()
    stories = {r: [e["event"] for e in events if e["email"] == r] for r in SIX}
    assert stories == {
        "bounce@example.com": ["processed", "bounce"],
        "blocked@example.com": ["processed", "bounce"],
        "defer-then-deliver@example.com": ["processed", "deferred", "delivered"],
        "drop@example.com": ["dropped"],
        "open-click@example.com": ["processed", "delivered", "open", "click"],
        "ana@example.com": ["processed", "delivered"],
    }
    assert [e["type"] for e in events if e["event"] == "bounce"] == ["bounce", "blocked"]
    assert all(e["email_id"] == "order-7" and e["category"] == ["orders"] for e in events)
    assert all(e["sg_message_id"].startswith(message_id) and isinstance(e["timestamp"], int) for e in events)
    assert len({e["sg_event_id"] for e in events}) == len(events) == 14


def test_batches_are_cut_by_size(receiver: Receiver, api_key: str) -> None:
    options = WebhookOptions(url=f"{receiver.url}/hook", batch_interval=0.2, max_events=4)
    with running_sandbox(api_key, webhook=options) as sandbox:
        send(sandbox.url, api_key, mail(SIX))
        wait_until(lambda: len(receiver.events()) >= 14, 10, "all events")
    assert [len(json.loads(body)) for _, body in receiver.posts] == [4, 4, 4, 2]


def test_a_refused_batch_is_posted_again(receiver: Receiver, api_key: str) -> None:
    receiver.refuse = 2
    options = WebhookOptions(url=f"{receiver.url}/hook", batch_interval=0.05, retry_interval=0.05)
    with running_sandbox(api_key, webhook=options) as sandbox, SandboxClient(sandbox.url, api_key) as control:
        send(sandbox.url, api_key, mail(["ana@example.com"]))
        wait_until(lambda: len(receiver.events()) >= 2, 10, "the batch after two refusals")
        stats = control.webhook()
    assert stats["refused_posts"] == 2 and stats["accepted_posts"] == 1
    assert [e["event"] for e in receiver.events()] == ["processed", "delivered"]


@pytest.mark.parametrize("mode", [WebhookMode.DUPLICATE, WebhookMode.SHUFFLE])
def test_duplicates_and_reordering_on_request(receiver: Receiver, api_key: str, mode: WebhookMode) -> None:
    options = WebhookOptions(url=f"{receiver.url}/hook", batch_interval=0.1)
    with running_sandbox(api_key, webhook=options) as sandbox, SandboxClient(sandbox.url, api_key) as control:
        assert control.set_webhook_mode(mode.value)["mode"] == mode.value
        send(sandbox.url, api_key, mail(SIX))
        expected = 28 if mode is WebhookMode.DUPLICATE else 14
        wait_until(lambda: len(receiver.events()) >= expected, 10, f"{expected} events")
    events = receiver.events()
    ids = [e["sg_event_id"] for e in events]
    if mode is WebhookMode.DUPLICATE:
        assert len(set(ids)) == 14 and len(ids) == 28
    else:
        in_order = sorted(events, key=lambda e: (SIX.index(e["email"]), e["timestamp"]))
        assert len(set(ids)) == 14 and events != in_order
