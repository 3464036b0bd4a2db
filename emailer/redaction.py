"""Exceptions described without the data they carry, for logs and error-queue headers.

SQLAlchemy puts the failed statement's parameters into ``str(exc)``: subjects,
addresses and metadata of a whole batch. Such text must not reach a log line
or ``NServiceBus.ExceptionInfo.Message``. ``describe`` gives the exception's
type and the first line of the driver's own message (the database's reason),
never the statement or its parameters; a ``DETAIL`` line (which may quote a
value) is dropped too.
"""

from __future__ import annotations

MAX_CHARS = 500


def describe(exc: BaseException) -> str:
    """``Type: reason`` with no statement, parameters or detail lines."""
    return f"{type_name(exc)}: {message(exc)}"


def message(exc: BaseException) -> str:
    """The redacted message alone."""
    from sqlalchemy.exc import StatementError

    source: BaseException = exc
    if isinstance(exc, StatementError):
        source = exc.orig if isinstance(exc.orig, BaseException) else exc
        if source is exc:  # no driver error: SQLAlchemy's own text, cut before the statement
            text = str(exc).split("\n[SQL:", 1)[0].split("\n(Background", 1)[0]
            return _first_line(text)
    return _first_line(str(source)) or type(source).__name__


def type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0].strip() if lines else ""
    return first if len(first) <= MAX_CHARS else first[: MAX_CHARS - 1] + "…"
