"""Which handler takes which message, and whether it runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts import Message
from handlers.ports import MessageContext


@dataclass(frozen=True)
class Route:
    """``handler(message, uow)`` with its other dependencies already bound by bootstrap.

    ``transactional`` handlers run inside a unit of work the pipeline opens (and
    may share with other messages of a batch); the others open their own.
    """

    message_type: type[Message]
    handler: Callable[[Any, Any], None]
    transactional: bool = True
    prefetch: Callable[[list[Any], Any], None] | None = None
    """Optional: load what a batch of these messages will need in one go, ``prefetch(messages, uow)``."""
    trusted_decoder: Callable[[bytes], Message] | None = None
    """Optional, for an internal command: decodes a body whose signature the pipeline verified without
    validating it again (``trusted.py``); ``ValueError`` sends it the validating way."""
    batch: Callable[[list[tuple[Any, MessageContext]], Any], list[Exception | None]] | None = None
    """Optional, for a handler that commits on its own: ``batch(items, uow)`` handles the messages of a
    consumer batch together (``(message, context)`` each) and answers, for each, None (done) or the
    exception that stopped it; the pipeline gives the unit of work its relay (``uow.relay_each_commit``),
    so what it commits is published as it commits."""
    handler_name: str = ""
    """What ``Emailer.Handler`` names on a failed message (bootstrap binds ``handler`` in a lambda)."""

    @property
    def name(self) -> str:
        if self.handler_name:
            return self.handler_name
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


def qualified_name(function: Callable[..., Any]) -> str:
    """``module.function``, as ``Emailer.Handler`` names a handler."""
    return f"{function.__module__}.{function.__qualname__}"


class Registry:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = {r.message_type.type_name(): r for r in routes}

    def route(self, type_name: str) -> Route | None:
        return self._routes.get(type_name)

    def message_types(self) -> list[str]:
        return sorted(self._routes)
