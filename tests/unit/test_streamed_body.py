"""Request bodies with attachments streamed in: the same bytes as building them whole, a chunk in memory.

The SendGrid body and the ``.eml`` file are built with stand-ins for the
attachments' bytes and cut around them; the base64 is produced while each blob
is read through its sha256 check. These tests hold the streamed bytes to the
non-streamed builders' and the memory to a bound (the SendGrid request over
HTTP is tested in tests/integration/test_sendgrid_streaming.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tracemalloc
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from emailer.adapters.blobstore.local import LocalBlobStore
from emailer.adapters.providers.file import FileProvider, build_message, eml_body
from emailer.adapters.providers.sendgrid import build_request_body, encode_body
from emailer.adapters.providers.sendgrid_stream import mail_send_body
from emailer.adapters.providers.streamed_body import READ_BYTES, base64_chunks, base64_length
from handlers.claim_check import StoredAttachment
from handlers.ports import AttachmentUnusable, BlobStore, Outcome, OutgoingAttachment, OutgoingEmail
from tests.factories import PDF_BYTES, PNG_BYTES, outgoing_email
from tests.fakes import FakeBlobStore

MIB = 1024 * 1024


def stored(
    blobs: BlobStore, data: bytes, filename: str, content_type: str = "application/octet-stream"
) -> OutgoingAttachment:
    """An attachment whose bytes are a blob, read through the sha256 check (as dispatch builds it)."""
    key = blobs.put(data)
    return OutgoingAttachment(
        filename, content_type, source=StoredAttachment(blobs, key, len(data), filename)
    )


def altered(blobs: FakeBlobStore, data: bytes, filename: str) -> OutgoingAttachment:
    """A stored attachment whose blob was changed afterwards, same size (found only by reading it)."""
    attachment = stored(blobs, data, filename)
    assert attachment.source is not None
    blobs.blobs[attachment.source.sha256] = data[:-1] + bytes([data[-1] ^ 1])
    return attachment


def mixed_email(blobs: BlobStore, big: bytes) -> OutgoingEmail:
    logo = OutgoingAttachment("logo.png", "image/png", PNG_BYTES, disposition="inline", content_id="logo")
    return outgoing_email(
        "order-42",
        html='<p><img src="cid:logo"></p>',
        attachments=[
            stored(blobs, PDF_BYTES, "invoice.pdf", content_type="application/pdf"),
            logo,
            OutgoingAttachment("empty.txt", "text/plain", b""),
            stored(blobs, big, "big.bin"),
        ],
    )


class ShortReads:
    """A reader that returns fewer bytes than asked (as a socket or an S3 stream may)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(min(self._step, size) if size >= 0 else self._step)


# ------------------------------------------------------------------ base64 while reading


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 747, 748, READ_BYTES - 1, READ_BYTES, 3 * READ_BYTES + 5])
@pytest.mark.parametrize("step", [7, 65536, 10**9])
def test_base64_while_reading_is_base64(size: int, step: int) -> None:
    data = os.urandom(size)

    unbroken = b"".join(base64_chunks(ShortReads(data, step)))
    lines = b"".join(base64_chunks(ShortReads(data, step), line_bytes=747, linesep=b"\r\n"))

    assert unbroken == base64.b64encode(data)
    assert len(unbroken) == base64_length(size)
    expected_lines = b"".join(base64.b64encode(data[i : i + 747]) + b"\r\n" for i in range(0, size, 747))
    assert lines == expected_lines
    assert len(lines) == base64_length(size, 747, b"\r\n")


def test_base64_lines_must_hold_whole_groups_of_three_bytes() -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        next(base64_chunks(io.BytesIO(b"abc"), line_bytes=76))


# ------------------------------------------------------------------ SendGrid's body


def test_the_streamed_sendgrid_body_is_byte_for_byte_the_built_one() -> None:
    blobs = FakeBlobStore()
    big = os.urandom(3 * READ_BYTES + 11)
    email = mixed_email(blobs, big)

    body = mail_send_body(email, lambda e: encode_body(build_request_body(e)))
    streamed = body.whole()

    assert streamed == encode_body(build_request_body(email))
    assert len(streamed) == body.length
    assert len(body.pieces) == 5  # around four attachments, none of them read to build it


def test_an_altered_blob_stops_the_sendgrid_body_before_its_last_chunk() -> None:
    blobs = FakeBlobStore()
    email = outgoing_email(attachments=[altered(blobs, os.urandom(3 * READ_BYTES), "invoice.pdf")])
    body = mail_send_body(email, lambda e: encode_body(build_request_body(e)))

    given = bytearray()
    with pytest.raises(AttachmentUnusable, match="altered"):
        for chunk in body.chunks():
            given += chunk

    assert 0 < len(given) < body.length - base64_length(READ_BYTES)  # the last chunk never left


# ------------------------------------------------------------------ the .eml file


def parts(raw: bytes) -> list[tuple[str, str | None, str | None, str | None, bytes]]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_content_type(), part.get_filename(), part.get_content_disposition(),
                      part["Content-ID"], payload))  # fmt: skip
    return found


def test_the_streamed_eml_parses_to_the_parts_of_the_built_message(tmp_path: Path) -> None:
    blobs = FakeBlobStore()
    big = os.urandom(3 * READ_BYTES + 11)
    email = mixed_email(blobs, big)
    provider = FileProvider(tmp_path / "mail")

    assert provider.send(email).outcome is Outcome.ACCEPTED

    written = provider.path_for("order-42").read_bytes()
    built = build_message(email).as_bytes()
    assert parts(written) == parts(built)
    assert [p[1] for p in parts(written) if p[1]] == ["logo.png", "invoice.pdf", "empty.txt", "big.bin"]
    assert parts(written)[-1][4] == big

    # Byte for byte but for what changes on every build: the date and the multipart boundaries.
    def same(raw: bytes) -> bytes:
        return re.sub(rb"={15}\d+==", b"B", re.sub(rb"Date: [^\r\n]*\r\n", b"", raw))

    assert same(written) == same(built)
    assert len(written) == eml_body(email).length


def test_an_altered_blob_leaves_no_eml_and_no_temporary_file(tmp_path: Path) -> None:
    blobs = FakeBlobStore()
    email = outgoing_email(attachments=[altered(blobs, os.urandom(3 * READ_BYTES), "invoice.pdf")])
    provider = FileProvider(tmp_path / "mail")

    outcome = provider.send(email)

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reason is not None and "'invoice.pdf'" in outcome.reason and "altered" in outcome.reason
    assert list((tmp_path / "mail").iterdir()) == []


def test_prepare_reads_no_attachment(tmp_path: Path) -> None:
    """Building the request before the attempt costs no blob read: dispatch reads each blob once."""
    blobs = FakeBlobStore()
    email = outgoing_email(attachments=[altered(blobs, os.urandom(1000), "invoice.pdf")])

    FileProvider(tmp_path / "mail").prepare(email)  # an altered blob would raise if it were read


# ------------------------------------------------------------------ memory


def test_writing_an_eml_with_a_large_blob_holds_a_few_chunks_not_the_file(tmp_path: Path) -> None:
    size = 8 * MIB
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(size)
    key = blobs.put(data)
    assert hashlib.sha256(data).hexdigest() == key
    del data
    email = outgoing_email(attachments=[OutgoingAttachment(
        "big.bin", "application/octet-stream", source=StoredAttachment(blobs, key, size, "big.bin"),
    )])  # fmt: skip
    provider = FileProvider(tmp_path / "mail")

    tracemalloc.start()
    try:
        outcome = provider.send(email)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert outcome.outcome is Outcome.ACCEPTED
    assert peak < 2 * MIB, f"peak {peak / MIB:.1f} MiB of Python allocations for an {size // MIB} MiB blob"
    assert provider.path_for("order-42").stat().st_size > size * 4 // 3
