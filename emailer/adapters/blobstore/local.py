"""The embedded blob store: a folder, one file per blob, named by the sha256 of its content.

A streamed put writes to a temporary file in ``.incoming/`` while hashing, then
renames it to its content address; the temporary file is removed on any failure
(too large, a broken upload), so nothing half-written is ever under a key.
Storing content that is already there touches the file: its time says when it
was last uploaded, which the purge's grace period reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from emailer.adapters.atomic import write_atomically
from handlers.ports import BlobInfo, BlobReader, BlobTooLarge, StoredBlob

CHUNK_BYTES = 256 * 1024


def is_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not is_key(key):
            raise KeyError(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            os.utime(path)  # same content, same key: nothing to write, but it was uploaded again now
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        return key

    def put_stream(
        self,
        reader: BlobReader,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
    ) -> StoredBlob:
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=incoming, suffix=".part")
        try:
            digest, size = _copy_hashing(reader, handle, max_size)
            key = digest.hexdigest()
            path = self._path(key)
            if path.exists():
                os.utime(path)
                Path(temporary).unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return StoredBlob(key, size)

    def open(self, key: str) -> contextlib.AbstractContextManager[BlobReader]:
        try:
            file: BinaryIO = self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        return file

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def stat(self, key: str) -> BlobInfo | None:
        try:
            found = self._path(key).stat()
        except (FileNotFoundError, KeyError):
            return None
        return BlobInfo(key, found.st_size, datetime.fromtimestamp(found.st_mtime, UTC))

    def size(self, key: str) -> int | None:
        info = self.stat(key)
        return info.size if info is not None else None

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):  # not a valid key: nothing stored under it
            self._path(key).unlink(missing_ok=True)

    def list(self) -> Iterator[BlobInfo]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("??/??/*"):
            if is_key(path.name):
                info = self.stat(path.name)
                if info is not None:
                    yield info


def _copy_hashing(reader: BlobReader, handle: int, max_size: int | None) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(handle, "wb") as file:
        while chunk := reader.read(CHUNK_BYTES):
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise BlobTooLarge(max_size)
            digest.update(chunk)
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())
    return digest, size
