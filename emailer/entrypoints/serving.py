"""Serving an ASGI app on a socket bound first, so a taken port is one line and the banner comes after.

``bind`` takes the port before anything else starts (``--port 0`` picks a free
one, and ``url`` tells which); ``serve`` hands the bound socket to uvicorn and
calls ``on_started`` once uvicorn serves it. SIGINT and SIGTERM stop uvicorn
gracefully and ``serve`` then returns, so the caller's clean-up runs.
"""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvicorn


class ListenError(Exception):
    """The gateway cannot listen where it was told to; the message says what to change."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``ListenError`` naming the setting if it cannot be had."""
    where = f"{host}:{port}"
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address, family=family)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: unknown host ({exc.strerror}); "
                          "check --host / EMAILER_GATEWAY_HOST") from None  # fmt: skip
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is already in use"
        elif exc.errno == errno.EACCES:
            reason = f"not allowed to use port {port}"
        else:
            reason = exc.strerror or type(exc).__name__
        raise ListenError(
            f"cannot listen on {where}: {reason}; choose another with --port or EMAILER_GATEWAY_PORT "
            "(--host / EMAILER_GATEWAY_HOST for the address)"
        ) from None


def url(sock: socket.socket) -> str:
    """The URL a client on this machine uses to reach ``sock`` (loopback for a wildcard address)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Open event streams end now, so that the graceful shutdown does not wait for them.
        stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
        if stopping is not None:
            stopping.set()
        super().handle_exit(sig, frame)


def serve(app: Any, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Serve ``app`` on ``sock`` until SIGINT / SIGTERM; ``on_started()`` once it is being served."""
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10), on_started)
    # uvicorn restores the handlers it found and raises the signal again once it has shut
    # down; with these no-op handlers that ends here, and the caller's clean-up runs.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
