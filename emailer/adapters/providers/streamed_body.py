"""A provider's request body with attachments streamed in: base64 encoded while read, a chunk in memory.

Both providers send attachments in base64: SendGrid as one JSON string, the
``.eml`` file as lines. Each builds its request as before, but with a small
random stand-in for every attachment's bytes (``stand_ins``); the encoded result
is cut where each stand-in's base64 sits (``StreamedBody.around``), and the
real base64 is produced there while the attachment is read. The reader is the
attachment's own stream (for a blob, the one that checks its sha256), so a blob
found altered raises before its last chunk is encoded and handed on.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace

from handlers.ports import BlobReader, OutgoingAttachment

READ_BYTES = 192 * 1024
"""Bytes read from the store per step (a multiple of 3: 256 KiB of base64 with no padding between)."""


def base64_length(size: int, line_bytes: int | None = None, linesep: bytes = b"") -> int:
    """Length of what ``base64_chunks`` yields for ``size`` bytes, known before a byte is read."""
    encoded = 4 * ((size + 2) // 3)
    if line_bytes is None or size == 0:
        return encoded
    lines = (size + line_bytes - 1) // line_bytes
    return encoded + lines * len(linesep)


def base64_chunks(reader: BlobReader, line_bytes: int | None = None, linesep: bytes = b"") -> Iterator[bytes]:
    """The base64 of everything ``reader`` returns, in chunks of about ``READ_BYTES`` encoded.

    Without ``line_bytes``: one unbroken string (what JSON carries). With it: lines
    of ``line_bytes`` input bytes each (a multiple of 3), every line, the last
    included, followed by ``linesep`` (what ``email.contentmanager`` writes).
    """
    unit = line_bytes or 3
    if unit % 3:
        raise ValueError(f"a base64 line must encode a multiple of 3 bytes, not {unit}")
    block = max(READ_BYTES // unit, 1) * unit
    pending = bytearray()
    while True:
        data = reader.read(block)
        if not data:
            break
        pending += data
        if len(pending) >= block:
            whole = len(pending) - len(pending) % unit
            yield _encode(memoryview(pending)[:whole], line_bytes, linesep)
            del pending[:whole]
    if pending:
        yield _encode(memoryview(pending), line_bytes, linesep)


def _encode(data: memoryview, line_bytes: int | None, linesep: bytes) -> bytes:
    try:
        if line_bytes is None:
            return binascii.b2a_base64(data, newline=False)
        return b"".join(
            binascii.b2a_base64(data[i : i + line_bytes], newline=False) + linesep
            for i in range(0, len(data), line_bytes)
        )
    finally:
        data.release()


def stand_ins(attachments: Sequence[OutgoingAttachment]) -> tuple[list[OutgoingAttachment], list[bytes]]:
    """Each attachment with 24 random bytes for content, and those bytes (to find them again)."""
    markers = [secrets.token_bytes(24) for _ in attachments]
    replaced = [replace(a, content=m, source=None) for a, m in zip(attachments, markers, strict=True)]
    return replaced, markers


@dataclass(frozen=True)
class StreamedBody:
    """A body cut around each attachment's base64: ``pieces[0]``, attachment 0, ... ``pieces[-1]``.

    The attachments are in the order their base64 comes in the body.
    """

    pieces: list[bytes]
    attachments: list[OutgoingAttachment]
    line_bytes: int | None = None
    linesep: bytes = b""

    @classmethod
    def around(
        cls,
        encoded: bytes,
        markers: Sequence[bytes],
        attachments: Sequence[OutgoingAttachment],
        line_bytes: int | None = None,
        linesep: bytes = b"",
    ) -> StreamedBody:
        """Cut ``encoded`` (built with ``stand_ins``) where each marker's base64 (and ``linesep``) sits."""
        found = []
        for marker, attachment in zip(markers, attachments, strict=True):
            cut = base64.b64encode(marker) + linesep
            if encoded.count(cut) != 1:  # pragma: no cover - 192 random bits found in the email's own text
                raise ValueError("an attachment's stand-in also appears elsewhere in the body")
            found.append((encoded.index(cut), len(cut), attachment))
        found.sort(key=lambda f: f[0])
        pieces, start = [], 0
        for at, length, _ in found:
            pieces.append(encoded[start:at])
            start = at + length
        pieces.append(encoded[start:])
        return cls(pieces, [a for _, _, a in found], line_bytes, linesep)

    @property
    def length(self) -> int:
        """The exact length of the body, known before an attachment is read."""
        encoded = sum(base64_length(a.size, self.line_bytes, self.linesep) for a in self.attachments)
        return sum(map(len, self.pieces)) + encoded

    def chunks(self) -> Generator[bytes, None, None]:
        """The body, each attachment read (and checked) and encoded as it goes."""
        for piece, attachment in zip(self.pieces, self.attachments, strict=False):
            yield piece
            with attachment.open() as reader:
                yield from base64_chunks(reader, self.line_bytes, self.linesep)
        yield self.pieces[-1]

    def whole(self) -> bytes:
        """All of it in memory (for tests)."""
        return b"".join(self.chunks())
