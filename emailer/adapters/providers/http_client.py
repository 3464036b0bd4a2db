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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx
from httpx._transports.default import map_httpcore_exceptions

from handlers.ports import Outcome

NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)
"""Transport errors raised before a request's first byte was written: no server can hold it."""


@dataclass(frozen=True)
class Endpoint:
    """A URL POSTed to with the same headers every time, in httpcore's terms, worked out once."""

    url: httpx.URL
    target: httpcore.URL
    headers: tuple[tuple[bytes, bytes], ...]
    """``Host`` (what httpx would add) and the given headers, encoded as httpx would (ASCII)."""

    @classmethod
    def of(cls, url: httpx.URL, headers: Mapping[str, str]) -> Endpoint:
        target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        encoded = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
        return cls(url, target, ((b"Host", url.netloc), *encoded))


@dataclass(frozen=True)
class Answer:
    """A server's answer, read whole."""

    status_code: int
    content: bytes
    headers: httpx.Headers


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

    def post(self, endpoint: Endpoint, length: int, content: Iterable[bytes]) -> Answer:
        """POST ``length`` bytes of ``content`` on a lent connection, the answer read whole before the
        connection goes back. Failures are httpx's own exceptions, as from an ``httpx.Client``.

        Straight to the connection pool (httpcore) of the transport the connection's client would use
        for the URL (a proxy from the environment included), with exactly the endpoint's headers and
        the timeouts above, through httpx's own mapping of httpcore's exceptions to httpx's (the one
        its transport applies). What the client adds on top (a cookie jar fed by every answer,
        redirects, auth, default headers, event hooks) is nothing a provider call uses and cost about
        a third of its CPU a request; building an ``httpx.Request`` and ``httpx.Response`` around
        httpcore's own, about a sixth of what was left. httpx's private names relied on here
        (``Client._transport_for_url``, ``HTTPTransport._pool``, ``map_httpcore_exceptions``) are
        the same in every httpx pyproject allows (>= 0.27); every sandbox test and
        tests/integration/test_sendgrid_connections.py go through them.
        """
        request = httpcore.Request(
            b"POST",
            endpoint.target,
            headers=[*endpoint.headers, (b"Content-Length", b"%d" % length)],
            content=content,
            extensions={"timeout": self._timeouts},
        )
        with self.client() as http:
            transport = http._transport_for_url(endpoint.url)
            assert isinstance(transport, httpx.HTTPTransport)  # every client here is built by _take
            with map_httpcore_exceptions():
                response = transport._pool.handle_request(request)
                try:
                    body = response.read()
                finally:
                    response.close()
        return Answer(response.status, body, httpx.Headers(response.headers))

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
