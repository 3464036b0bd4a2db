"""Running a short transaction again when the database connection was lost before it committed.

Only for transactions that are safe to run again from the start: each opens
its own connection, so a retry gets a fresh one from the pool (SQLAlchemy
invalidates the pool on a disconnect). A handler's transaction is never
retried here: a failed message goes back to the pipeline's recoverability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from emailer.retries import database_retrying

T = TypeVar("T")


def connection_lost(exc: BaseException) -> bool:
    """A lost or unusable connection (or SQLite's busy database): nothing was committed, try again."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


def with_reconnect(transaction: Callable[[], T]) -> T:
    """Run ``transaction()`` under ``emailer.retries.database_retrying``; the last failure is raised."""
    return database_retrying(connection_lost)(transaction)
