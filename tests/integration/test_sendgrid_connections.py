"""The SendGrid provider keeps its connections: how many it opens, and what a closed one means.

Against the sandbox through a TCP proxy that counts connections (N emails, at
most the pool's size of connections), and against ``KeepAliveStub``, a
keep-alive HTTP/1.1 server written here that closes connections on cue: while
idle, right after an answer, or after reading a whole request without
answering (having taken it, or not). Whatever it does, no outcome may be wrong:
accepted only if it took the request, transient only if it never got a whole
request, and unknown otherwise.
"""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pytest

from emailer.adapters.providers.sendgrid import SendGridProvider
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import SandboxHandle
from handlers.ports import BlobReader, BlobStoreUnavailable, Outcome, OutgoingAttachment, SendOutcome
from tests.factories import new_api_key, outgoing_email
from tests.proxy import TcpProxy

WAIT_S = 10.0
SENDS = 200


@pytest.fixture
def proxy(sandbox: SandboxHandle) -> Iterator[TcpProxy]:
    port = int(sandbox.url.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as counting:
        yield counting


def provider_for(url: str, api_key: str | None = None, **options: float) -> SendGridProvider:
    return SendGridProvider(api_key=api_key or new_api_key(), base_url=url, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------ connections kept


@pytest.mark.parametrize("pool_size", [1, 4])
def test_many_sends_from_many_threads_open_at_most_the_pools_connections(
    api_key: str, proxy: TcpProxy, control: SandboxClient, pool_size: int
) -> None:
    """Every one accepted: none of them lost to a connection closed under it by another thread
    (a shared httpcore pool did that about once in 300 sends here)."""
    provider = provider_for(f"http://127.0.0.1:{proxy.port}", api_key, pool_size=pool_size)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda i: provider.send(outgoing_email(f"e-{i}")), range(SENDS)))
        answer = provider.find_message("e-1")  # a lookup borrows a kept connection too
    finally:
        provider.close()

    assert [o for o in outcomes if o.outcome is not Outcome.ACCEPTED] == []
    assert control.stats() == {"received": SENDS, "accepted": SENDS}
    assert answer.held is True and answer.provider_message_id == outcomes[1].provider_message_id
    assert 1 <= proxy.connections <= pool_size


def test_sequential_sends_use_one_connection(api_key: str, proxy: TcpProxy, control: SandboxClient) -> None:
    provider = provider_for(f"http://127.0.0.1:{proxy.port}", api_key)
    try:
        outcomes = [provider.send(outgoing_email(f"e-{i}")).outcome for i in range(20)]
    finally:
        provider.close()

    assert set(outcomes) == {Outcome.ACCEPTED}
    assert proxy.connections == 1


class BlockingSource:
    """An attachment source that hangs until ``go`` is set, then fails (a stuck blob store)."""

    sha256 = "0" * 64
    size = 1024

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.go = threading.Event()

    def open(self) -> AbstractContextManager[BlobReader]:
        source = self

        class Reader(io.RawIOBase):
            def read(self, size: int = -1, /) -> bytes:
                source.reading.set()
                source.go.wait(WAIT_S)
                raise BlobStoreUnavailable("the store went away")

        return Reader()


def test_a_send_finding_the_pool_busy_waits_then_gives_up_not_sent(
    api_key: str, sandbox: SandboxHandle, control: SandboxClient
) -> None:
    provider = provider_for(sandbox.url, api_key, pool_size=1, timeout=0.3)
    slow = BlockingSource()
    attachment = OutgoingAttachment("slow.bin", "application/octet-stream", source=slow)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(provider.send, outgoing_email("holding", attachments=[attachment]))
            assert slow.reading.wait(WAIT_S)  # the one connection is taken, mid-body
            waiting = provider.send(outgoing_email("waiting"))
            slow.go.set()
            holding = first.result(WAIT_S)
    finally:
        provider.close()

    assert holding.outcome is Outcome.TRANSIENT  # its blob store failed: cut short, not sent
    assert waiting.outcome is Outcome.TRANSIENT
    assert waiting.reason is not None and waiting.reason.startswith("not sent: PoolTimeout")
    assert control.messages("waiting") == []


# ------------------------------------------------------------------ a server closing kept connections


@dataclass
class Arrival:
    email_id: str
    complete: bool
    taken: bool
    connection: int


class KeepAliveStub:
    """A keep-alive HTTP/1.1 server on loopback; each request is handled as the next step of ``script``.

    ``accept``: 202, the connection kept. ``accept-then-close``: 202 (no ``Connection: close``),
    then it closes the connection. ``take-then-close``: reads the whole request, takes it, closes
    without an answer. ``close-unread``: reads the whole request, does not take it (it was closing
    anyway), closes without an answer. ``take-then-reset``: takes it, then resets the connection.
    After the script, ``accept``. A connection idle for ``idle_timeout`` seconds is closed.
    """

    def __init__(self, script: list[str] | None = None, idle_timeout: float = 30.0) -> None:
        self.script = deque(script or [])
        self.idle_timeout = idle_timeout
        self.arrivals: list[Arrival] = []
        self.opened = 0
        self.closed = 0
        self._changed = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def wait_closed(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.closed >= count, WAIT_S), "the stub did not close"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.opened += 1
                number = self.opened
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            while self._one_request(conn, number):
                pass
        finally:
            conn.close()
            with self._changed:
                self.closed += 1
                self._changed.notify_all()

    def _one_request(self, conn: socket.socket, number: int) -> bool:
        conn.settimeout(self.idle_timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            length = int(found.group(1)) if found else 0
            conn.settimeout(WAIT_S)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
        except TimeoutError:
            return False  # idle too long: the server closes it
        step = self.script.popleft() if self.script else "accept"
        email_id = json.loads(body)["custom_args"]["email_id"] if len(body) == length else "?"
        taken = len(body) == length and step != "close-unread"
        with self._changed:
            self.arrivals.append(Arrival(email_id, len(body) == length, taken, number))
        if step == "take-then-reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if step in ("take-then-close", "close-unread", "take-then-reset"):
            return False
        conn.sendall(
            f"HTTP/1.1 202 Accepted\r\nX-Message-Id: {email_id}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        return step == "accept"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._listener.close()

    def __enter__(self) -> KeepAliveStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_no_outcome_is_wrong(outcomes: dict[str, SendOutcome], arrivals: list[Arrival]) -> None:
    """Accepted only if taken; transient only if no whole request arrived; unknown otherwise."""
    by_id = {a.email_id: a for a in arrivals}
    for email_id, outcome in outcomes.items():
        arrived = by_id.get(email_id)
        if outcome.outcome is Outcome.ACCEPTED:
            assert arrived is not None and arrived.taken, email_id
        elif outcome.outcome is Outcome.TRANSIENT:
            assert arrived is None or not arrived.complete, email_id
        else:
            assert outcome.outcome is Outcome.UNKNOWN and arrived is not None, (email_id, outcome)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    with KeepAliveStub(idle_timeout=0.2) as stub:
        provider = provider_for(stub.url, keepalive_expiry=30.0)  # longer than the server keeps it
        try:
            first = provider.send(outgoing_email("first"))
            stub.wait_closed(1)  # idle past the server's timeout: it closed its end
            second = provider.send(outgoing_email("second"))
        finally:
            provider.close()

    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert [a.connection for a in stub.arrivals] == [1, 2]  # checked before reuse, and dropped


def test_a_kept_connection_past_its_expiry_is_not_reused() -> None:
    with KeepAliveStub() as stub:
        provider = provider_for(stub.url, keepalive_expiry=0.05)
        try:
            first = provider.send(outgoing_email("first"))
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline:  # the client's own expiry, by its clock
                time.sleep(0.01)
            second = provider.send(outgoing_email("second"))
        finally:
            provider.close()

    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert [a.connection for a in stub.arrivals] == [1, 2]


def test_no_outcome_is_wrong_whatever_the_server_does_with_kept_connections() -> None:
    script = ["accept", "accept", "accept-then-close", "accept", "take-then-close", "accept"]
    script += ["close-unread", "accept", "take-then-reset", "accept", "accept"]
    with KeepAliveStub(script) as stub:
        provider = provider_for(stub.url, pool_size=1)
        outcomes: dict[str, SendOutcome] = {}
        try:
            for i in range(len(script)):
                outcomes[f"e-{i}"] = provider.send(outgoing_email(f"e-{i}"))
                if script[i] == "accept-then-close":
                    stub.wait_closed(1)  # its FIN is in before the next send looks at the connection
        finally:
            provider.close()

    assert_no_outcome_is_wrong(outcomes, stub.arrivals)
    kinds = [outcomes[f"e-{i}"].outcome for i in range(len(script))]
    unknown = [i for i, kind in enumerate(kinds) if kind is Outcome.UNKNOWN]
    # Each close after a whole request is unknown, taken or not: the client cannot tell them apart.
    assert unknown == [4, 6, 8]
    assert all(kinds[i] is Outcome.ACCEPTED for i in range(len(script)) if i not in unknown)
    reasons = [outcomes[f"e-{i}"].reason or "" for i in unknown]
    assert [r.split(":")[1].strip() for r in reasons] == [
        "RemoteProtocolError", "RemoteProtocolError", "ReadError"
    ]  # fmt: skip
    assert stub.opened == 5  # one at the start, and one after each close: every other one was kept
