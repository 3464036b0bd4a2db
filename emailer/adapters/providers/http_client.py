"""A provider's HTTP connections, kept alive and lent one request at a time, and what a failure means.

``KeptConnections`` holds up to ``size`` connections (the worker's dispatch
concurrency), each kept open for the next request until it has been idle for
``keepalive_expiry`` seconds. Against SendGrid that saves a TCP and a TLS
handshake per email; it also bounds the connections a worker holds. A request
borrows one connection (an ``httpx.Client`` of one connection) for its whole
exchange, the most recently returned first (warm, least likely to have
expired), and waits at most the read timeout for one when all are lent
(``httpx.PoolTimeout``: not sent).

Why one client per connection rather than one ``httpx.Client`` with a pool of
``size`` shared by the threads: httpcore's pool reads a connection's state
outside that connection's lock, so under threads one request's pass can close
a connection another thread has just been handed and is using (httpcore issue
#1110): the request, written whole, then fails reading its answer (``EBADF``),
an unknown outcome for an email the server took. Seen here about once in 300
sends with 8 threads on a pool of 4. A client used by one thread at a time has
no such race.

A kept connection the server closes while it is idle is the one hazard of
keep-alive. httpcore checks an idle connection before it reuses it (a socket
the server closed reads as readable, and is dropped), and the expiry is kept
below the server's idle timeout, so the server is not the one to close it
first. What remains is a race of microseconds (the server closes just as the
request is written); then the request fails as any other does, and the rule
below decides what it means.

What a transport failure means, from httpx's exception types and from whether
every byte of the body was handed to the socket (the caller tracks that:
httpcore swallows a ``WriteError`` and goes on to read the answer, so the error
that surfaces after a failed write is often a ``ReadError`` or a
``RemoteProtocolError``):

- ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ProxyError``,
  ``UnsupportedProtocol``: raised before the request's first byte was written
  anywhere: not sent -> ``TRANSIENT``;
- any other failure before the last byte of the body was written (a
  ``WriteError``, a ``WriteTimeout``, the server resetting the connection
  mid-body): the server never got a whole request (the body's length is
  declared, so it cannot take a part of it for all of it): not sent ->
  ``TRANSIENT``;
- any failure once the whole body was written and before an answer
  (``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``: "Server
  disconnected without sending a response"): the server may have taken it ->
  ``UNKNOWN``, never a blind resend. That holds on a reused connection too: no
  exception type tells "the server had closed it before reading the request"
  from "the server took the request and then went away", so a failure there is
  not provably "not sent", and reconciliation settles it.
"""

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from handlers.ports import Outcome

NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)
"""Transport errors raised before a request's first byte was written: no server can hold it."""


class KeptConnections:
    """Up to ``size`` kept-alive connections, each lent to one request at a time (thread-safe)."""

    def __init__(
        self, *, read_timeout: float, connect_timeout: float, size: int, keepalive_expiry: float
    ) -> None:
        """``connect_timeout`` bounds opening a connection (TLS included); ``read_timeout`` bounds
        each read and write afterwards, and the wait for a free connection when all are lent."""
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._timeouts = self._timeout.as_dict()
        self._limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry
        )
        self._wait = read_timeout
        self._size = size
        self._free: queue.LifoQueue[httpx.Client] = queue.LifoQueue()
        self._made: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None  # one for every connection: loading the CAs costs ms

    @contextmanager
    def client(self) -> Iterator[httpx.Client]:
        """A client of one connection, this thread's until the ``with`` block ends."""
        client = self._take()
        try:
            yield client
        finally:
            self._free.put(client)

    def post(self, url: httpx.URL, headers: Mapping[str, str], content: Iterator[bytes]) -> httpx.Response:
        """POST on a lent connection, its answer read whole before the connection goes back.

        Straight to the connection's transport (the one its client would use for ``url``: a proxy
        from the environment included), with exactly ``headers`` (no client defaults) and the
        timeouts above: what the client adds on top (a cookie jar fed by every answer, redirects,
        auth, default headers, event hooks) is nothing a provider call uses, and cost about a third of
        the client's CPU per request. Failures are httpx's own exceptions, as from the client.
        ``Client._transport_for_url`` is httpx's own routing (private, unchanged since 0.18; the
        sandbox tests and tests/integration/test_sendgrid_connections.py go through it).
        """
        request = httpx.Request("POST", url, headers=headers, content=content)
        request.extensions["timeout"] = self._timeouts
        with self.client() as http:
            response = http._transport_for_url(url).handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        return response

    def close(self) -> None:
        """Close every connection (the pool is not used afterwards)."""
        with self._lock:
            made, self._made = self._made, []
        for client in made:
            client.close()

    def _take(self) -> httpx.Client:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._made) < self._size:
                if self._tls is None:
                    self._tls = httpx.create_ssl_context()
                client = httpx.Client(
                    timeout=self._timeout, limits=self._limits, verify=self._tls, follow_redirects=False
                )
                self._made.append(client)
                return client
        try:
            return self._free.get(timeout=self._wait)
        except queue.Empty:
            raise httpx.PoolTimeout(
                f"all {self._size} connections stayed in use for {self._wait:g} s"
            ) from None


def failure_outcome(err: httpx.TransportError, body_written: bool) -> Outcome:
    """``TRANSIENT`` when the request was provably not sent, else ``UNKNOWN`` (see the module's rule)."""
    if isinstance(err, NOT_SENT) or not body_written:
        return Outcome.TRANSIENT
    return Outcome.UNKNOWN


def describe(err: httpx.TransportError) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
