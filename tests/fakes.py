"""In-memory fakes of our own ports: unit tests of the domain and handlers use these, never mocks."""

from __future__ import annotations

import copy
import hashlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from emailer.adapters.providers.gate import (
    ProviderState,
    ProviderStateChanges,
)
from emailer.domain import Email, EmailStatus
from emailer.domain.suppression import Suppression, normalize
from emailer.signing import Signer
from handlers.errors import ConcurrencyConflict
from handlers.ports import (
    BlobInfo,
    BlobReader,
    BlobStoreUnavailable,
    BlobTooLarge,
    LookupAnswer,
    OutgoingEmail,
    OutgoingMessage,
    SendOutcome,
    StoredBlob,
)
from handlers.unit_of_work import AbstractUnitOfWork

T = TypeVar("T")


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class FakeBlobStore:
    """The blob store in a dict; ``modified`` keeps each blob's write time (from ``clock`` if given)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.modified: dict[str, datetime] = {}
        self.clock = clock
        self.unavailable = False
        """Prime with True: every call raises BlobStoreUnavailable, as if the store were down."""

    def _check(self) -> None:
        if self.unavailable:
            raise BlobStoreUnavailable("the fake blob store is down")

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        self._check()
        key = hashlib.sha256(data).hexdigest()
        self.blobs[key] = data
        self.modified[key] = self._now()
        return key

    def put_stream(
        self,
        reader: BlobReader,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
    ) -> StoredBlob:
        self._check()
        chunks, size = [], 0
        while chunk := reader.read(64 * 1024):
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise BlobTooLarge(max_size)
            chunks.append(chunk)
        return StoredBlob(self.put(b"".join(chunks)), size)

    def open(self, key: str) -> AbstractContextManager[BlobReader]:
        return io.BytesIO(self.get(key))

    def get(self, key: str) -> bytes:
        self._check()
        return self.blobs[key]

    def stat(self, key: str) -> BlobInfo | None:
        self._check()
        if key not in self.blobs:
            return None
        return BlobInfo(key, len(self.blobs[key]), self.modified[key])

    def size(self, key: str) -> int | None:
        info = self.stat(key)
        return info.size if info is not None else None

    def delete(self, key: str) -> None:
        self._check()
        self.blobs.pop(key, None)
        self.modified.pop(key, None)

    def list(self) -> Iterator[BlobInfo]:
        self._check()
        for key in list(self.blobs):
            info = self.stat(key)
            if info is not None:
                yield info


class FakeBlobReferences:
    """``BlobReferences`` in memory: records which keys each transaction held."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def hold(self, keys: Iterable[str]) -> None:
        self.held.extend(sorted(set(keys)))


class RecordingProvider:
    """Records what it was asked to send; prime it with outcomes to return (else: accepted)."""

    name = "fake"

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []
        self.outcomes: list[SendOutcome] = []
        self.refuse_to_build: Exception | None = None
        """Prime with an exception for ``prepare`` (and so ``send``) to raise, as a provider-level fake."""

    def prepare(self, email: OutgoingEmail) -> None:
        if self.refuse_to_build is not None:
            raise self.refuse_to_build

    def send(self, email: OutgoingEmail) -> SendOutcome:
        self.prepare(email)
        self.sent.append(email)
        if self.outcomes:
            return self.outcomes.pop(0)
        return SendOutcome.accepted(f"fake-{len(self.sent)}", status=202)


class LookingUpProvider(RecordingProvider):
    """A provider that can be asked what it holds: ``holds`` (email id -> message id) is its record.

    Every email it accepts is held; prime ``unavailable`` with reasons to fail the next lookups,
    and ``forget`` an id to play a provider whose records lag behind.
    """

    name = "fake-lookup"

    def __init__(self) -> None:
        super().__init__()
        self.holds: dict[str, str] = {}
        self.lookups: list[str] = []
        self.unavailable: list[str] = []

    def send(self, email: OutgoingEmail) -> SendOutcome:
        outcome = super().send(email)
        if outcome.provider_message_id:
            self.holds[email.email_id] = outcome.provider_message_id
        return outcome

    def lookup(self, email_id: str) -> LookupAnswer:
        self.lookups.append(email_id)
        if self.unavailable:
            return LookupAnswer.unavailable(self.unavailable.pop(0))
        held = self.holds.get(email_id)
        return LookupAnswer(held=held is not None, provider_message_id=held)


class FakeProviderState(ProviderStateChanges):
    """The providers' shared state in memory, decided by the same rules as the SQL store."""

    def __init__(self) -> None:
        self.states: dict[str, ProviderState] = {}
        self.unavailable = False
        """Prime with True: every call raises, as if the database were down."""
        self._lock = threading.Lock()

    def _change(self, provider: str, step: Callable[[ProviderState], tuple[T, ProviderState]]) -> T:
        if self.unavailable:
            raise ConnectionError("the fake provider state is down")
        with self._lock:
            result, self.states[provider] = step(self.read(provider))
        return result

    def read(self, provider: str) -> ProviderState:
        return self.states.get(provider) or ProviderState(provider)

    def read_all(self) -> list[ProviderState]:
        return [self.states[p] for p in sorted(self.states)]


class RecordingPublisher:
    """The ``Publisher`` port in memory: records what it published; prime ``failures`` to raise first."""

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []
        self.failures: list[Exception] = []
        self.calls = 0

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.published.extend(messages)

    def types(self) -> list[str]:
        return [m.message_type for m in self.published]


class FakeRelay:
    """The pipeline's relay in memory: publishes what a commit wrote; a failure is left for a sweep."""

    def __init__(self, publisher: RecordingPublisher | None = None) -> None:
        self.publisher = publisher or RecordingPublisher()
        self.left_for_sweep: list[OutgoingMessage] = []

    def publish_committed(self, messages: Sequence[OutgoingMessage]) -> bool:
        if not messages:
            return True
        try:
            self.publisher.publish(messages)
        except Exception:  # noqa: BLE001 - as the outbox: the rows stay pending
            self.left_for_sweep.extend(messages)
            return False
        return True


class _Store:
    """What the fake 'database' holds between transactions."""

    def __init__(self) -> None:
        self.emails: dict[str, Email] = {}
        self.inbox: dict[str, str] = {}
        self.provider_events: set[tuple[str, str]] = set()
        self.suppressions: dict[str, Suppression] = {}
        self.outbox: list[OutgoingMessage] = []
        self.timeline: dict[str, list[str]] = {}
        self.locked: set[str] = set()
        """Email ids another transaction holds: ``claim`` skips them (as ``SKIP LOCKED`` would)."""


class _FakeEmails:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self.seen: dict[str, Email] = {}
        self.versions: dict[str, int] = {}
        self.claimed: set[str] = set()

    def add(self, email: Email) -> None:
        self.seen[email.id] = email

    def get(self, email_id: str) -> Email | None:
        if email_id not in self.seen and email_id in self.store.emails:
            self.seen[email_id] = copy.deepcopy(self.store.emails[email_id])
            self.versions[email_id] = self.seen[email_id].version
        return self.seen.get(email_id)

    def preload(self, email_ids: Iterable[str]) -> None:
        for email_id in email_ids:
            self.get(email_id)

    def claim(self, email_ids: Iterable[str], offered: Mapping[str, Email] | None = None) -> list[Email]:
        free = sorted(set(email_ids) - self.store.locked)
        for email_id in free:  # an offered email whose stored version is still its own is taken as it is
            mine, stored = (offered or {}).get(email_id), self.store.emails.get(email_id)
            if mine and stored and email_id not in self.seen and stored.version == mine.version:
                self.keep([mine])
        found = [e for e in (self.get(i) for i in free) if e is not None and e.status is EmailStatus.QUEUED]
        self.claimed |= {e.id for e in found}
        self.store.locked |= self.claimed  # held until this transaction ends
        return found

    def keep(self, emails: Iterable[Email]) -> None:
        for email in emails:
            self.seen[email.id] = email
            self.versions[email.id] = email.version

    def due(self, now: datetime, limit: int) -> list[Email]:
        ids = [e.id for e in self.store.emails.values() if e.due_at is not None and e.due_at <= now]
        return [e for e in (self.get(i) for i in ids[:limit]) if e is not None]

    def unsettled(self, started_before: datetime, limit: int) -> list[str]:
        waiting = [
            e
            for e in self.store.emails.values()
            if e.status is EmailStatus.DISPATCHING
            and e.attempt_started_at is not None
            and e.attempt_started_at <= started_before
        ]
        waiting.sort(key=lambda e: e.attempt_started_at or started_before)
        return [e.id for e in waiting[:limit]]


class _FakeInbox:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self.staged: dict[str, str] = {}

    def seen(self, message_id: str) -> bool:
        return message_id in self.store.inbox or message_id in self.staged

    def record(self, message_id: str, message_type: str) -> None:
        self.staged[message_id] = message_type

    def preload(self, message_ids: Iterable[str]) -> None:
        pass  # nothing to gain in memory


class _FakeProviderEvents:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self.staged: set[tuple[str, str]] = set()

    def seen(self, provider: str, event_id: str) -> bool:
        return (provider, event_id) in self.store.provider_events | self.staged

    def record(self, provider: str, event_id: str, email_id: str) -> None:
        self.staged.add((provider, event_id))

    def claim(self, events: Iterable[tuple[str, str, str]]) -> None:
        pass  # nothing to gain in memory: ``seen`` and ``record`` do it


class _FakeSuppressions:
    """Staged like the rest: visible to the next transaction only after commit."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.view = dict(store.suppressions)

    def find(self, addresses: Iterable[str]) -> list[Suppression]:
        wanted = {normalize(a) for a in addresses}
        return [s for a, s in self.view.items() if a in wanted]

    def preload(self, addresses: Iterable[str]) -> None:
        pass  # nothing to gain in memory

    def add(self, suppression: Suppression) -> bool:
        address = normalize(suppression.address)
        if address in self.view:
            return False
        self.view[address] = suppression
        return True

    def remove(self, address: str) -> bool:
        return self.view.pop(normalize(address), None) is not None

    def page(self, limit: int = 100, after: str | None = None) -> list[Suppression]:
        return [self.view[a] for a in sorted(self.view) if after is None or a > normalize(after)][:limit]


class FakeUnitOfWork(AbstractUnitOfWork):
    """Transactions over dicts: nothing is visible to the next transaction until commit."""

    emails: _FakeEmails
    inbox: _FakeInbox
    provider_events: _FakeProviderEvents
    blob_refs: FakeBlobReferences
    suppressions: _FakeSuppressions

    def __init__(
        self, clock: FakeClock, store: _Store | None = None, *, signer: Signer | None = None
    ) -> None:
        super().__init__(clock, signer=signer)
        self.store = store or _Store()
        self.commits = 0
        self.conflicts = 0
        """Prime with N: the next N commits fail with ConcurrencyConflict, as if another
        transaction had changed the email first (nothing of theirs is saved)."""

    def _begin(self) -> None:
        self.emails = _FakeEmails(self.store)
        self.inbox = _FakeInbox(self.store)
        self.provider_events = _FakeProviderEvents(self.store)
        self.blob_refs = FakeBlobReferences()
        self.suppressions = _FakeSuppressions(self.store)

    def _touched(self) -> list[Email]:
        return list(self.emails.seen.values())

    def _flush(self, outbox: list[OutgoingMessage]) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrencyConflict("primed conflict")
        for email in self.emails.seen.values():  # all checked before any is saved, as one transaction
            stored = self.store.emails.get(email.id)
            loaded = self.emails.versions.get(email.id)
            if stored is not None and loaded is not None and stored.version != loaded:
                raise ConcurrencyConflict(email.id)
        for email in self.emails.seen.values():
            stored = self.store.emails.get(email.id)
            if stored is None or email.dirty:
                email.version += 1
                self.store.timeline.setdefault(email.id, []).extend(t.kind for t in email.new_timeline)
                email.new_timeline.clear()
                email.dirty = False
                self.store.emails[email.id] = copy.deepcopy(email)
        self.store.inbox.update(self.inbox.staged)
        self.store.provider_events |= self.provider_events.staged
        self.store.suppressions = dict(self.suppressions.view)
        self.store.outbox.extend(outbox)

    def _commit(self) -> None:
        self.commits += 1
        self.store.locked -= self.emails.claimed

    def _rollback(self) -> None:
        self.store.locked -= self.emails.claimed

    # test helpers
    def published(self, type_name: str | None = None) -> list[OutgoingMessage]:
        return [m for m in self.store.outbox if type_name is None or m.message_type == type_name]
