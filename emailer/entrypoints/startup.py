"""Start-up failures as one line each: which setting or service, and what to do.

A process that cannot start (a database or broker that does not answer, a
schema not at head, a port already taken, API tokens that are missing or
unreadable) says so in one line on stderr and exits non-zero, instead
of a traceback. Anything not recognised here is a bug and keeps its traceback.
"""

from __future__ import annotations


def describe(exc: BaseException) -> str | None:
    """The one-line explanation of a start-up failure, or None if it is not one we know."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from emailer.adapters.bus import BusUnavailable
    from emailer.adapters.persistence.schema import SchemaNotAtHead
    from emailer.config import ConfigError
    from emailer.entrypoints.gateway.auth import TokenError
    from emailer.entrypoints.serving import ListenError

    if isinstance(exc, ConfigError | TokenError | ListenError):
        return str(exc)
    if isinstance(exc, BusUnavailable):
        return f"{exc} (check EMAILER_BUS_URL and that RabbitMQ is running)"
    if isinstance(exc, SchemaNotAtHead):
        return str(exc)
    if isinstance(exc, OperationalError | DBAPIError):
        return (
            f"database unreachable: {_first_line(exc.orig or exc)} "
            "(check EMAILER_DATABASE_URL and that the database server is running)"
        )
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError):
        return f"{exc} (check EMAILER_VAR_DIR and the paths derived from it)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
