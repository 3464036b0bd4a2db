"""Running the sandbox: in the foreground (``emailer sandbox``) or on a background thread (tests).

Both bind the listening socket first, so ``port=0`` yields a free port that is
known before the server starts and cannot be taken by someone else meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from emailer.sandbox.app import create_app
from emailer.sandbox.state import SandboxState
from emailer.sandbox.webhooks import WebhookOptions, WebhookSender

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 1
"""Seconds in-flight requests (a ``slow`` send, say) get to finish when the sandbox stops."""


@dataclass(frozen=True)
class SandboxHandle:
    """A sandbox running in this process: where it listens, and its state to inspect or steer."""

    url: str
    state: SandboxState
    webhooks: WebhookSender | None = None


class _AnnouncingServer(uvicorn.Server):
    """Prints the one ``sandbox listening on ...`` line once the server really accepts requests."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        print(f"sandbox listening on {self._url}", flush=True)


def serve(host: str, port: int, api_key: str | None, webhook: WebhookOptions | None = None) -> None:
    """Serve a fresh sandbox until interrupted (blocking). ``port=0`` picks a free port."""
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    sender = _start_webhooks(webhook)
    state = SandboxState(webhook_url=webhook.url if webhook else None)
    config = uvicorn.Config(create_app(state, api_key, sender), log_level="warning", access_log=False)
    try:
        _AnnouncingServer(config, url).run(sockets=[sock])
    finally:
        if sender is not None:
            sender.stop()


def _start_webhooks(webhook: WebhookOptions | None) -> WebhookSender | None:
    if webhook is None:
        return None
    sender = WebhookSender(webhook)
    sender.start()
    print(f"sandbox webhook posting to {webhook.url} (mode {sender.mode.value})", flush=True)
    print(f"sandbox webhook public key (SendGrid format): {sender.keys.public_key}", flush=True)
    return sender


@contextmanager
def running_sandbox(
    api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, webhook: WebhookOptions | None = None
) -> Iterator[SandboxHandle]:
    """A sandbox serving on a background thread for the duration of the ``with`` block."""
    state = SandboxState(webhook_url=webhook.url if webhook else None)
    sender = WebhookSender(webhook) if webhook else None
    if sender is not None:
        sender.start()
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(state, api_key, sender),
        log_level="warning",
        access_log=False,
        log_config=None,  # leave the host process's logging configuration alone
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emailer-sandbox", daemon=True
    )
    thread.start()
    try:
        _wait_until_serving(url, thread)
        yield SandboxHandle(url=url, state=state, webhooks=sender)
    finally:
        if sender is not None:
            sender.stop()
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_GRACE_S + 5)
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _wait_until_serving(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the sandbox server stopped while starting")
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    raise TimeoutError(f"the sandbox at {url} did not answer /healthz within {STARTUP_TIMEOUT_S}s")
