"""Writing a file so that readers see either no file or the whole of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path`` through, piece by piece: it appears, whole, only if the block ends well.

    The bytes go to a temporary file beside ``path``, synced, then renamed over it;
    an exception inside the block (or while syncing) removes the temporary and
    leaves ``path`` as it was.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see no file or the whole file: write a temporary beside it, then rename."""
    with atomic_file(path) as file:
        file.write(data)
