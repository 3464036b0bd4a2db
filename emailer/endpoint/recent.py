"""Emails as this worker's accept committed them, kept for the claim that dispatches them.

Under a backlog the worker accepts first and leaves dispatching to the
``DispatchEmail`` messages (``local_dispatch.py``): they come round once the
backlog is taken in, and their claim would read back every email the accept
had just written (its row, recipients and attachments). The accept's emails are
kept here instead, and a dispatch batch offers those of its messages to its
claim (``EmailRepository.claim(ids, offered)``), which locks each row by a
query of its version alone and takes the kept email as it is where the row is
still at that version: every change of an email raises it. An email changed
meanwhile (cancelled, woken, taken by another worker) is read again, as before.

Nothing depends on it: an email not kept, dropped or handed out already is
read from the database. Each is handed out once (``take``), so no two
transactions share one. Bounded by count and by an estimate of the memory an
email holds (its text, HTML and recipients); the oldest go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from contracts import DispatchEmail
from emailer.domain import Email, EmailStatus
from handlers.ports import MessageContext
from handlers.unit_of_work import AbstractUnitOfWork

MAX_EMAILS = 10_000
MAX_BYTES = 32 * 1024 * 1024
"""About what the kept emails hold at most (``weight``)."""


class RecentEmails:
    def __init__(self, max_emails: int = MAX_EMAILS, max_bytes: int = MAX_BYTES) -> None:
        self.max_emails = max_emails
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[Email, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def bytes(self) -> int:
        return self._bytes

    def keep(self, emails: Iterable[Email]) -> None:
        """Keep these (as a commit just left them; the queued ones only: no other can be claimed).
        One heavier than a hundredth of the budget is not kept: it is read again instead."""
        with self._lock:
            for email in emails:
                if email.status is not EmailStatus.QUEUED:
                    continue
                size = weight(email)
                if 100 * size > self.max_bytes:
                    continue
                self._drop(email.id)
                self._kept[email.id] = (email, size)
                self._bytes += size
                while len(self._kept) > self.max_emails or self._bytes > self.max_bytes:
                    self._drop(next(iter(self._kept)))

    def take(self, email_ids: Iterable[str]) -> dict[str, Email]:
        """Those of these emails that are kept, handed out (and no longer kept)."""
        with self._lock:
            taken: dict[str, Email] = {}
            for email_id in email_ids:
                if (email := self._drop(email_id)) is not None:
                    taken[email_id] = email
            return taken

    def offer(
        self, messages: Sequence[tuple[DispatchEmail, MessageContext]], uow: AbstractUnitOfWork
    ) -> AbstractUnitOfWork:
        """Offer the kept emails of these messages to ``uow``'s claim; returns ``uow``."""
        uow.offered.update(self.take(email_id for command, _ in messages for email_id in command.email_ids()))
        return uow

    def _drop(self, email_id: str) -> Email | None:
        entry = self._kept.pop(email_id, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]


def weight(email: Email) -> int:
    """About the bytes an email holds in memory (a measured 1.7 KB for a short one, plus its texts)."""
    content = email.content
    texts = sum(len(t) for t in (content.subject, content.text, content.html) if t)
    return 2048 + texts + (4096 if content.template_data else 0) + 256 * len(email.recipients)

