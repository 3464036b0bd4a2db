"""Exceptions described without the data they carry, for logs and error-queue headers.

SQLAlchemy puts the failed statement's parameters into ``str(exc)``: subjects,
addresses and metadata of a whole batch. Such text must not reach a log line
or ``NServiceBus.ExceptionInfo.Message``. ``describe`` gives the exception's
type and the first line of the driver's own message (the database's reason),
never the statement or its parameters; a ``DETAIL`` line (which may quote a
value) is dropped too. ``format_traceback`` is a stack trace whose exception
lines (of the whole ``__cause__`` / ``__context__`` chain) are redacted the same way.
"""

from __future__ import annotations

import traceback

MAX_CHARS = 500
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


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


def format_traceback(exc: BaseException) -> str:
    """Like ``traceback.format_exception``, but each exception line is ``describe(exc)``.

    Frames name files, lines and source code only, never values; the exception
    lines are where SQLAlchemy and the drivers put statement parameters.
    """
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, joined_by in reversed(chain):
        frames = traceback.format_tb(error.__traceback__)
        if frames:
            parts.append("Traceback (most recent call last):\n" + "".join(frames))
        parts.append(describe(error) + "\n")
        if joined_by:  # what links this exception to the next one (printed after it)
            parts.append(joined_by)
    return "".join(parts)


def type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0].strip() if lines else ""
    return first if len(first) <= MAX_CHARS else first[: MAX_CHARS - 1] + "…"
