"""The embedded blob store: a folder, one file per blob, named by the sha256 of its content."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from emailer.adapters.atomic import write_atomically


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise KeyError(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key  # same content, same key: nothing to write
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, KeyError):
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):  # not a valid key: nothing stored under it
            self._path(key).unlink(missing_ok=True)
