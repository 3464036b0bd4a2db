"""Fewer ``recv`` calls for py-amqp's frame reads: one per chunk instead of three per frame.

py-amqp's ``TCPTransport._read(n)`` asks the socket for exactly the bytes it
still needs: a frame costs a ``recv`` for its 7-byte header, one for its
payload and one for its end octet, so a delivered message (method, header and
body frames) costs nine, and a batch of publisher confirms three per ack. The
kernel had all of them already. ``buffered_reads`` gives the transport a
``_read`` that asks for at least ``CHUNK`` bytes and keeps the surplus in the
transport's own ``_read_buffer``, where py-amqp's read and timeout handling
already keep a partial frame: a ``recv`` returns what is there, so it never
waits for more than the frame needs. Everything else (timeouts, EINTR, a
closed peer) is as in py-amqp.

Only py-amqp's plain TCP transport (its ``_quick_recv`` is the socket's
``recv``) is changed; TLS and kombu's in-memory transport are left alone. A
new connection has a new transport: apply it after every connect.
"""

from __future__ import annotations

import errno
from typing import Any

CHUNK = 8 * 1024
"""Bytes asked of each ``recv``: a few frames. Small, because the rest of the buffer is copied per read."""

_RETRY = (errno.EAGAIN, errno.EINTR)


def buffered_reads(transport: Any) -> None:
    """Make ``transport`` (a connected py-amqp ``TCPTransport``) read ``CHUNK`` bytes at a time."""
    if transport is None or type(transport).__name__ != "TCPTransport":
        return
    state = vars(transport)
    if "_read" in state or "_quick_recv" not in state:  # done already, or not connected
        return

    def _read(n: int, initial: bool = False) -> bytes:
        """py-amqp's ``TCPTransport._read``: exactly ``n`` bytes, with a larger ``recv``."""
        recv = transport._quick_recv
        rbuf = transport._read_buffer
        try:
            while len(rbuf) < n:
                try:
                    s = recv(max(n - len(rbuf), CHUNK))
                except OSError as exc:
                    if exc.errno in _RETRY:
                        if initial and transport.raise_on_initial_eintr:
                            raise TimeoutError from exc  # socket.timeout, as py-amqp raises it
                        continue
                    raise
                if not s:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += s
        except BaseException:
            transport._read_buffer = rbuf
            raise
        result, transport._read_buffer = rbuf[:n], rbuf[n:]
        return bytes(result)

    transport._read = _read
