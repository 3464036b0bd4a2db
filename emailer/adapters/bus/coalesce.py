"""One socket write for a whole batch of publishes, instead of one per message.

py-amqp writes every message (method, header and body frames) with its own
``sendall``; on loopback each of those runs the broker side's TCP receive path
in the writer's own system call, and a batch of 100 messages paid for 100 of
them. ``one_write`` collects the frames the channel writes meanwhile, in order,
and sends them in one ``sendall`` per ``FLUSH_BYTES`` and as the block ends, on the way out of an
exception too, so the broker sees exactly the frames the confirm tracker counted
(a dropped tail would shift every later delivery tag on the channel).

Only a plain TCP transport whose ``_write`` is its socket's ``sendall`` (set on
the instance by py-amqp) is buffered; anything else (TLS, kombu's in-memory
transport) writes as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

FLUSH_BYTES = 64 * 1024
"""Collected frames are sent once they reach this size (a batch of 100 ~1 KB messages: two writes)."""


@contextlib.contextmanager
def one_write(channel: Any) -> Iterator[None]:
    transport: Any = getattr(getattr(channel, "connection", None), "transport", None)
    send = vars(transport).get("_write") if transport is not None else None
    if transport is None or send is None:
        yield
        return
    chunks: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
        data, size = b"".join(chunks), 0
        chunks.clear()
        send(data)

    def collect(data: bytes) -> None:
        nonlocal size
        chunks.append(bytes(data))  # py-amqp reuses its frame buffer
        size += len(data)
        if size >= FLUSH_BYTES:  # bounded memory, and the broker starts confirming early
            flush()

    transport._write = collect
    try:
        yield
    finally:
        transport._write = send
        if chunks:
            transport.write(b"".join(chunks))  # transport.write: py-amqp's error handling on send
