"""A small TCP proxy a test owns, to cut a service off and bring it back (never the machine's service itself).

``cut()`` closes every open connection and refuses new ones (the port stays
bound, connections are accepted and dropped at once, as a dead path looks);
``restore()`` lets them through again. ``freeze()`` is the silent kind of
dead path: connections stay open but no byte gets through either way (no RST,
no FIN), until ``thaw()``. ``connections`` counts the connections it passed on
(to see whether a client keeps its connections). Traffic goes to loopback only.

A socket is closed by one thread only, the last of its connection's two pipe
threads, once neither can touch it again (``cut`` shuts sockets down, which
wakes those threads, and never closes them itself): closing a socket that
another thread is about to read lets the kernel give its number to a new socket
(a client's, the next test's), which the stale read, or a second close, would
then hit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server((listen_host, 0))
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._open = threading.Event()
        self._open.set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._running: dict[socket.socket, int] = {}  # pipe threads still using a connection's client
        self.connections = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    # -- control -----------------------------------------------------------------

    def cut(self) -> None:
        """Drop every connection now and every new one until ``restore``."""
        self._open.clear()
        with self._lock:
            sockets = set(self._sockets)
        for sock in sockets:
            _shut_down(sock)  # its pipe threads wake, stop and close it

    def restore(self) -> None:
        self._open.set()

    def freeze(self) -> None:
        """Stop forwarding without closing anything: a peer notices only by a timeout (heartbeats)."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(2)  # before its socket is closed: it may be about to accept on it
        self.cut()
        _close(self._server)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self._open.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):  # pass each piece on at once (no Nagle wait on a delayed ACK)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, upstream}
                self._running[client] = 2
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.2):  # frozen: hold the bytes, say nothing
                    if self._stop.is_set():
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shut_down(sock)  # wakes the other pipe thread
            with self._lock:
                self._running[client] -= 1
                last = self._running[client] == 0
                if last:
                    del self._running[client]
                    self._sockets -= {source, sink}
            if last:
                for sock in (source, sink):
                    _close(sock)


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shut_down(sock)
    with contextlib.suppress(OSError):
        sock.close()
