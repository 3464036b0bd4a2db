"""The claim check, checked: a blob's bytes are streamed through sha256 and compared with the reference.

A reference names a blob by its sha256 and size. Nothing guarantees the store
still holds those bytes (a lost object, a hand-edited bucket), so the bytes are
checked wherever they are read: when a command referring to them is accepted
(``verify_blob``), and again while dispatch streams them to the provider
(``StoredAttachment``). The check holds back the last chunk until the hash is
known, so a reader never hands out the complete bytes of an altered blob.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from emailer.domain import Attachment
from handlers.ports import AttachmentUnusable, BlobReader, BlobStore, OutgoingAttachment

CHUNK_BYTES = 256 * 1024


class VerifyingReader:
    """Reads a blob, hashing as it goes; raises ``AttachmentUnusable`` at the end if it does not match."""

    def __init__(self, inner: BlobReader, sha256: str, size: int, label: str) -> None:
        self._inner = inner
        self._sha256 = sha256
        self._size = size
        self._label = label
        self._hash = hashlib.sha256()
        self._count = 0
        self._ahead: bytes | None = None

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_BYTES), b""))
        if self._ahead is None:
            self._ahead = self._pull(max(size, 1))
        current = self._ahead
        if current:
            # Read the next chunk before handing this one out: the end (and the check) comes first.
            self._ahead = self._pull(max(size, 1))
        return current

    def _pull(self, size: int) -> bytes:
        data = self._inner.read(size)
        self._count += len(data)
        if self._count > self._size:
            raise AttachmentUnusable(
                f"{self._label}: the blob holds more than the {self._size} bytes it was stored with"
            )
        if data:
            self._hash.update(data)
            return data
        if self._count != self._size:
            raise AttachmentUnusable(
                f"{self._label}: the blob holds {self._count} bytes, not the {self._size} it was stored with"
            )
        if self._hash.hexdigest() != self._sha256:
            raise AttachmentUnusable(
                f"{self._label}: the blob's bytes were altered (their sha256 is {self._hash.hexdigest()})"
            )
        return b""


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment's bytes in the blob store, read through the check (an ``AttachmentSource``)."""

    blobs: BlobStore
    sha256: str
    size: int
    filename: str

    @property
    def label(self) -> str:
        return f"attachment {self.filename!r} ({self.sha256})"

    @contextmanager
    def open(self) -> Iterator[BlobReader]:
        try:
            opened = self.blobs.open(self.sha256)
            reader = opened.__enter__()
        except KeyError:
            raise AttachmentUnusable(f"{self.label} is missing from the blob store") from None
        try:
            yield VerifyingReader(reader, self.sha256, self.size, self.label)
        except BaseException as exc:
            if not opened.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            opened.__exit__(None, None, None)


def verify_blob(blobs: BlobStore, sha256: str, size: int, filename: str) -> None:
    """Read the whole blob through the check (bounded memory); ``AttachmentUnusable`` if it fails."""
    source = StoredAttachment(blobs, sha256, size, filename)
    with source.open() as reader:
        while reader.read(CHUNK_BYTES):
            pass


def outgoing_attachment(attachment: Attachment, blobs: BlobStore) -> OutgoingAttachment:
    """What the provider gets for one stored attachment: a checked stream, not the bytes.

    A blob that is gone, or whose size changed, raises ``LookupError`` here, before
    the attempt starts; altered bytes of the same size are found while streaming.
    """
    found = blobs.size(attachment.sha256)
    if found is None:
        raise LookupError(
            f"attachment {attachment.filename!r} ({attachment.sha256}) is not in the blob store"
        )
    if found != attachment.size:
        raise LookupError(
            f"attachment {attachment.filename!r} ({attachment.sha256}) was altered in the blob store: "
            f"{found} bytes, not {attachment.size}"
        )
    return OutgoingAttachment(
        filename=attachment.filename,
        content_type=attachment.content_type,
        disposition=attachment.disposition,
        content_id=attachment.content_id,
        source=StoredAttachment(blobs, attachment.sha256, attachment.size, attachment.filename),
    )
