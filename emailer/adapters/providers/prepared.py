"""Request bodies a provider built in ``prepare``, kept for the ``send`` of the same email.

The dispatch handler asks the provider to ``prepare`` an email (build its
request, to fail it for good if it cannot be built) before it commits the
attempt, then hands the very same ``OutgoingEmail`` object to ``send``. Building
the SendGrid body (the dict, its JSON, the cuts around attachments) is then done
once, not twice. A body is kept only while its email object lives: it is
dropped with it (an email the gate held back, a claim that failed after
``prepare``), so nothing piles up, and a ``send`` that finds none (another
object, even equal, or one never prepared) builds it as before.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

from handlers.ports import OutgoingEmail

B = TypeVar("B")


class PreparedBodies(Generic[B]):
    """Bodies by the identity of their email (thread-safe: each step is one dict operation)."""

    def __init__(self) -> None:
        self._bodies: dict[int, tuple[weakref.ref[OutgoingEmail], B]] = {}

    def keep(self, email: OutgoingEmail, body: B) -> None:
        key = id(email)
        self._bodies[key] = (weakref.ref(email, lambda ref: self._forget(key, ref)), body)

    def take(self, email: OutgoingEmail) -> B | None:
        """The body kept for this very object (once: a second ``take`` finds none), else None."""
        entry = self._bodies.pop(id(email), None)
        if entry is None or entry[0]() is not email:
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._bodies)

    def _forget(self, key: int, ref: weakref.ref[OutgoingEmail]) -> None:
        """The email is gone: so is its body (unless the key already holds another email's)."""
        entry = self._bodies.get(key)
        if entry is not None and entry[0] is ref:
            self._bodies.pop(key, None)
