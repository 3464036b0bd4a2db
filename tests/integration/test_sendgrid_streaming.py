"""SendGrid's Mail Send with a streamed body, over real HTTP: the bytes, the outcomes, the memory.

Against the sandbox (in this process) for what SendGrid would take, and against
``StubSendGrid``, a socket server written here, for what a real network does
half-way through a body: the connection cut while the body is still being
written (not sent: transient) and no answer once all of it was written
(unknown: never a blind resend).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import struct
import threading
import time
import tracemalloc
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from emailer.adapters.blobstore.local import LocalBlobStore
from emailer.adapters.providers.sendgrid import SendGridProvider, build_request_body, encode_body
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import SandboxHandle
from handlers.claim_check import StoredAttachment
from handlers.ports import BlobReader, BlobStore, BlobStoreUnavailable, Outcome, OutgoingAttachment
from tests.factories import PDF_BYTES, PNG_BYTES, new_api_key, outgoing_email
from tests.fakes import FakeBlobStore

MIB = 1024 * 1024


def stored(blobs: BlobStore, data: bytes, filename: str) -> OutgoingAttachment:
    key = blobs.put(data)
    source = StoredAttachment(blobs, key, len(data), filename)
    return OutgoingAttachment(filename, "application/octet-stream", source=source)


# ------------------------------------------------------------------ a server that misbehaves on cue


@dataclass(frozen=True)
class Seen:
    head: bytes
    received: int
    complete: bool
    body: bytes


class StubSendGrid:
    """An HTTP/1.1 server on loopback, one connection at a time, reading each request as ``mode`` says.

    ``accept``: read the whole body, answer 202. ``cut``: read 64 KiB of the body, then
    reset the connection. ``silent``: read the whole body, close without an answer.
    """

    def __init__(self, mode: str, keep_body: bool = False) -> None:
        self.mode = mode
        self.keep_body = keep_body
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # little buffered unread
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(64 * 1024)
            if not data:
                return
            head += data
        head, _, start = head.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        kept, received, buffer = [start], len(start), bytearray(64 * 1024)
        limit = min(64 * 1024, length) if self.mode == "cut" else length
        while received < limit:
            n = conn.recv_into(buffer)
            if n == 0:
                break
            received += n
            if self.keep_body:
                kept.append(bytes(buffer[:n]))
        self.seen.append(Seen(head, received, received == length, b"".join(kept) if self.keep_body else b""))
        if self.mode == "cut":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        elif self.mode == "accept":
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nX-Message-Id: stub-1\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def __enter__(self) -> StubSendGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def provider_for(url: str, timeout: float = 5.0) -> SendGridProvider:
    return SendGridProvider(api_key=new_api_key(), base_url=url, timeout=timeout)


# ------------------------------------------------------------------ the bytes


def test_the_streamed_request_is_byte_for_byte_the_built_body_with_its_length() -> None:
    blobs = FakeBlobStore()
    big = os.urandom(MIB + 1)
    logo = OutgoingAttachment("logo.png", "image/png", PNG_BYTES, disposition="inline", content_id="logo")
    pdf = stored(blobs, PDF_BYTES, "invoice.pdf")
    email = outgoing_email(attachments=[pdf, logo, stored(blobs, big, "b")])

    with StubSendGrid("accept", keep_body=True) as stub:
        outcome = provider_for(stub.url).send(email)

    assert outcome.outcome is Outcome.ACCEPTED and outcome.provider_message_id == "stub-1"
    [seen] = stub.seen
    expected = encode_body(build_request_body(email))
    assert seen.complete and seen.body == expected
    assert re.search(rb"(?im)^content-length: (\d+)", seen.head).group(1) == str(len(expected)).encode()  # type: ignore[union-attr]
    assert re.search(rb"(?im)^content-type: application/json", seen.head)
    assert re.search(rb"(?im)^user-agent: sendgrid/", seen.head)  # the sendgrid client's headers
    assert not re.search(rb"(?im)^transfer-encoding", seen.head)


def test_the_sandbox_gets_the_built_body_and_the_attachments_decode_to_the_blobs(
    api_key: str, sandbox: SandboxHandle, control: SandboxClient
) -> None:
    blobs = FakeBlobStore()
    big = os.urandom(3 * MIB + 2)
    logo = OutgoingAttachment("logo.png", "image/png", PNG_BYTES, disposition="inline", content_id="logo")
    pdf = stored(blobs, PDF_BYTES, "invoice.pdf")
    email = outgoing_email(attachments=[pdf, logo, stored(blobs, big, "b")])
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=10.0)

    outcome = provider.send(email)

    assert outcome.outcome is Outcome.ACCEPTED
    [message] = control.wait_for_messages(1, email_id="order-42")
    assert message["body"] == json.loads(encode_body(build_request_body(email)))
    contents = {a["filename"]: base64.b64decode(a["content"]) for a in message["body"]["attachments"]}
    assert contents == {"invoice.pdf": PDF_BYTES, "logo.png": PNG_BYTES, "b": big}


# ------------------------------------------------------------------ failures half-way


def test_an_altered_blob_mid_stream_is_rejected_and_the_sandbox_got_no_complete_request(
    api_key: str, sandbox: SandboxHandle, control: SandboxClient
) -> None:
    blobs = FakeBlobStore()
    data = os.urandom(4 * MIB)
    attachment = stored(blobs, data, "invoice.pdf")
    assert attachment.source is not None
    blobs.blobs[attachment.source.sha256] = data[:-1] + bytes([data[-1] ^ 1])  # same size, last byte
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=10.0)

    outcome = provider.send(outgoing_email("order-altered", attachments=[attachment]))

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reason is not None and "'invoice.pdf'" in outcome.reason and "altered" in outcome.reason
    deadline = time.monotonic() + 10
    while control.stats()["received"] < 1 and time.monotonic() < deadline:  # the cut request reaches it
        time.sleep(0.02)
    assert control.stats() == {"received": 1, "accepted": 0}
    assert control.messages() == []


class FailingSource:
    """An ``AttachmentSource`` whose store stops answering after ``good`` bytes."""

    def __init__(self, size: int, good: int) -> None:
        self.sha256 = "0" * 64
        self.size = size
        self._good = good

    def open(self) -> AbstractContextManager[BlobReader]:
        source = self

        class Reader(io.RawIOBase):
            given = 0

            def read(self, size: int = -1, /) -> bytes:
                if size < 0:
                    size = source.size - self.given
                if self.given + size > source._good:
                    raise BlobStoreUnavailable("the store went away")
                self.given += size
                return b"\0" * size

        return Reader()


def test_a_blob_store_failing_mid_stream_is_transient_and_the_body_was_cut() -> None:
    attachment = OutgoingAttachment("big.bin", "application/octet-stream", source=FailingSource(8 * MIB, MIB))

    with StubSendGrid("accept") as stub:
        outcome = provider_for(stub.url).send(outgoing_email(attachments=[attachment]))

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.reason is not None and "blob store is unavailable" in outcome.reason
    assert [s.complete for s in stub.seen] == [False]


def test_a_connection_cut_while_the_body_is_written_is_transient_not_sent() -> None:
    blobs = FakeBlobStore()
    email = outgoing_email(attachments=[stored(blobs, os.urandom(8 * MIB), "big.bin")])

    with StubSendGrid("cut") as stub:
        outcome = provider_for(stub.url).send(email)

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.reason is not None and outcome.reason.startswith("not sent:")
    assert [s.complete for s in stub.seen] == [False]


def test_no_answer_after_the_whole_body_was_written_is_unknown() -> None:
    blobs = FakeBlobStore()
    email = outgoing_email(attachments=[stored(blobs, os.urandom(2 * MIB), "big.bin")])

    with StubSendGrid("silent") as stub:
        outcome = provider_for(stub.url).send(email)

    assert outcome.outcome is Outcome.UNKNOWN
    assert outcome.reason is not None
    assert outcome.reason.startswith("sent, but no answer came: RemoteProtocolError")
    assert [s.complete for s in stub.seen] == [True]


# ------------------------------------------------------------------ memory


def test_sending_a_large_blob_holds_a_few_chunks_not_the_file(tmp_path: Path) -> None:
    size = 8 * MIB
    blobs = LocalBlobStore(tmp_path / "blobs")
    email = outgoing_email(attachments=[stored(blobs, os.urandom(size), "big.bin")])

    with StubSendGrid("accept") as stub:
        provider = provider_for(stub.url)
        provider.prepare(email)
        tracemalloc.start()
        try:
            outcome = provider.send(email)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert outcome.outcome is Outcome.ACCEPTED and [s.complete for s in stub.seen] == [True]
    assert peak < 2 * MIB, f"peak {peak / MIB:.1f} MiB of Python allocations for an {size // MIB} MiB blob"
