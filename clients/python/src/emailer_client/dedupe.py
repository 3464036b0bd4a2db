"""Where a subscriber remembers the message ids of the events it has handled (events have stable ids)."""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol


class DedupeStore(Protocol):
    """``seen`` before the handler runs, ``remember`` once it has returned."""

    def seen(self, message_id: str) -> bool: ...

    def remember(self, message_id: str) -> None: ...


class MemoryDedupeStore:
    """The default: the last ``capacity`` ids, in this process only."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def seen(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._ids

    def remember(self, message_id: str) -> None:
        with self._lock:
            self._ids[message_id] = None
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)


class SqliteDedupeStore:
    """Ids kept in a SQLite file: survives a restart of the subscriber (or a SIGKILL)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS handled (message_id TEXT PRIMARY KEY)")
        self._lock = threading.Lock()

    def seen(self, message_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM handled WHERE message_id = ?", (message_id,)).fetchone()
        return row is not None

    def remember(self, message_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO handled (message_id) VALUES (?)", (message_id,))

    def close(self) -> None:
        self._db.close()
