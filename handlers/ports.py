"""The ports handlers talk through: storage, blobs, provider, clock. Adapters implement them.

Handlers never see kombu, SQLAlchemy or HTTP; they see these small interfaces,
and tests give them in-memory fakes of the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from contracts import Address
from contracts.wire import H
from emailer.domain import Email
from emailer.domain import Outcome as Outcome  # re-exported: providers answer in the domain's terms
from emailer.domain import SendOutcome as SendOutcome
from emailer.domain.suppression import Suppression

# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class MessageContext:
    """What a handler may know of the incoming message: ids and headers, never the transport."""

    message_id: str
    message_type: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str:
        return self.headers.get(H.CORRELATION_ID) or self.message_id

    @property
    def conversation_id(self) -> str:
        return self.headers.get(H.CONVERSATION_ID) or self.message_id

    @classmethod
    def originating(cls, message_type: str = "Scheduled") -> MessageContext:
        """A context for work no message started (the scheduler, the HTTP API)."""
        return cls(message_id=str(uuid.uuid4()), message_type=message_type)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send or publish, encoded with its headers: what the outbox stores and the bus carries.

    ``destination`` is the queue for a Send and the routing key (the type name)
    for a Publish. The one type from handler to broker: the bus adapter maps it
    to AMQP, the outbox to rows.
    """

    message_id: str
    message_type: str
    body: bytes
    headers: Mapping[str, str]
    intent: Literal["Send", "Publish"]
    destination: str
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        if self.intent not in ("Send", "Publish"):
            raise ValueError(f"intent must be 'Send' or 'Publish', not {self.intent!r}")
        if not self.message_id:
            raise ValueError("an outgoing message needs a message id")
        if not self.destination:
            raise ValueError(f"{self.intent} of {self.message_type} has no destination")
        if not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes (encoded already), not {type(self.body).__name__}")


class Publisher(Protocol):
    """Puts messages on the bus; returns only once the broker confirmed every one of them."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> None: ...


class EmailRepository(Protocol):
    def add(self, email: Email) -> None: ...

    def get(self, email_id: str) -> Email | None:
        """The email, or None. Loading marks it as seen: its changes are saved on commit."""

    def preload(self, email_ids: Iterable[str]) -> None:
        """Load these emails in one round trip (a batch hint); ``get`` then answers from memory."""

    def claim(self, email_ids: Iterable[str], offered: Mapping[str, Email] | None = None) -> list[Email]:
        """Load the queued ones of these emails to attempt them, in one round trip, locked for this
        transaction where the database can (``FOR UPDATE SKIP LOCKED``): an email another transaction
        is changing right now (the scheduler, a callback, another worker) is left out rather than
        waited for or conflicted with. An email in any other status cannot be attempted and is left
        out too, unread: a DispatchEmail that comes round after its email was attempted (the local
        dispatch, a redelivery) costs one query that returns nothing. ``get`` then answers from
        memory for those it returned.

        ``offered``: emails as an earlier transaction of this process committed them (the accept's,
        to the local dispatch). One whose row is still at that version is taken as it is, locked
        but not read again (its content, recipients and attachments); any other is loaded."""

    def keep(self, emails: Iterable[Email]) -> None:
        """Take emails as an earlier transaction of this unit of work committed them (no query): their
        changes are saved on commit with the version check against that commit, so a change made
        meanwhile by anyone else is a ``ConcurrencyConflict`` as it would be for a loaded email."""

    def due(self, now: datetime, limit: int) -> list[Email]:
        """Emails the scheduler should act on now (queued and due, or waiting past their window).

        Rows are locked for this transaction where the database can (``SKIP LOCKED``),
        so competing schedulers take different emails.
        """

    def unsettled(self, started_before: datetime, limit: int) -> list[str]:
        """Ids of emails in ``dispatching`` whose attempt started by ``started_before``, oldest first."""


class Inbox(Protocol):
    """Incoming message ids already handled (deduplication of redeliveries)."""

    def seen(self, message_id: str) -> bool: ...

    def record(self, message_id: str, message_type: str) -> None: ...

    def preload(self, message_ids: Iterable[str]) -> None:
        """Check these ids in one round trip (a batch hint); ``seen`` then answers from memory."""


class ProviderEvents(Protocol):
    """Provider callback ids already applied (deduplication of webhook retries)."""

    def seen(self, provider: str, event_id: str) -> bool: ...

    def record(self, provider: str, event_id: str, email_id: str) -> None: ...

    def claim(self, events: Iterable[tuple[str, str, str]]) -> None:
        """A batch hint: these (provider, event id, email id) in one round trip, recorded now where
        the adapter can do it in the same statement; ``seen`` then answers from memory whether each
        was recorded before this transaction (``record`` of a claimed one writes nothing more)."""


class Suppressions(Protocol):
    """The suppression list: addresses not sent to (``emailer.domain.suppression``)."""

    def find(self, addresses: Iterable[str]) -> list[Suppression]:
        """The entries for these addresses (any case), in one round trip."""

    def preload(self, addresses: Iterable[str]) -> None:
        """Look these addresses up now, for a batch: ``find`` need not ask again for them."""

    def add(self, suppression: Suppression) -> bool:
        """List the address unless it is listed already (the first reason stays); True if added."""

    def remove(self, address: str) -> bool:
        """Take the address off the list; True if it was listed."""

    def page(self, limit: int = 100, after: str | None = None) -> list[Suppression]:
        """Entries in address order, ``limit`` at most, starting after ``after``."""


class BlobReader(Protocol):
    """A stream of a blob's bytes: ``read(n)`` returns at most n bytes, ``b""`` at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows of one blob without reading it."""

    key: str
    size: int
    modified_at: datetime
    """When it was last written (a put of content already stored counts as a write)."""


@dataclass(frozen=True)
class StoredBlob:
    """What a streamed put stored: its key (the sha256 of the bytes) and its size."""

    key: str
    size: int


class BlobTooLarge(Exception):
    """A streamed put passed its ``max_size``; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the content is larger than {limit} bytes")
        self.limit = limit


class BlobStoreUnavailable(Exception):
    """The blob store did not answer (network, server error): retry later, nothing is wrong with the data."""


class BlobStore(Protocol):
    """Content-addressed bytes: the key of a blob is the sha256 of its content (hex).

    Every method raises ``BlobStoreUnavailable`` when the store does not answer;
    ``KeyError`` and ``None`` mean "no such blob", never "cannot tell".
    """

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str: ...

    def put_stream(
        self,
        reader: BlobReader,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
    ) -> StoredBlob:
        """Store what ``reader`` yields, hashing while streaming (bounded memory).

        More than ``max_size`` bytes raises ``BlobTooLarge`` and leaves nothing stored.
        """

    def open(self, key: str) -> AbstractContextManager[BlobReader]:
        """The blob's bytes as a stream; raises KeyError if there is no such blob."""

    def get(self, key: str) -> bytes:
        """The blob's bytes; raises KeyError if there is no such blob."""

    def stat(self, key: str) -> BlobInfo | None:
        """Size and write time of the blob, or None if there is no such blob."""

    def size(self, key: str) -> int | None:
        """Size in bytes of the blob, or None if there is no such blob."""

    def delete(self, key: str) -> None: ...

    def list(self) -> Iterator[BlobInfo]:
        """Every blob in the store (for garbage collection)."""


class BlobReferences(Protocol):
    """The database's side of the claim check: which blobs emails still need.

    ``hold`` locks the blobs' rows until the transaction ends, so a purge running
    at the same time waits and then sees the new reference (it never deletes a
    blob an email being accepted needs).
    """

    def hold(self, keys: Iterable[str]) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware current time (UTC)."""


# --------------------------------------------------------------------------- provider


class AttachmentSource(Protocol):
    """Where an attachment's bytes come from when they are not in memory: a blob, checked while read."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def open(self) -> AbstractContextManager[BlobReader]:
        """The bytes as a stream. Raises ``AttachmentUnusable`` if the blob is missing or altered
        (an altered blob raises before its last bytes are returned)."""


class AttachmentUnusable(Exception):
    """An attachment's blob is missing, or its bytes no longer match its sha256 or size (permanent)."""


@dataclass(frozen=True)
class OutgoingAttachment:
    """One attachment to send: bytes in memory (``content``), or a checked stream (``source``)."""

    filename: str
    content_type: str
    content: bytes = b""
    disposition: str = "attachment"
    content_id: str | None = None
    source: AttachmentSource | None = None

    @property
    def size(self) -> int:
        return self.source.size if self.source is not None else len(self.content)

    def open(self) -> AbstractContextManager[BlobReader]:
        """The bytes as a stream (checked against the sha256 when they come from the blob store)."""
        if self.source is not None:
            return self.source.open()
        import io

        return io.BytesIO(self.content)

    def read(self) -> bytes:
        """All the bytes in memory: for small emails only (providers stream large ones)."""
        if self.source is None:
            return self.content
        with self.source.open() as reader:
            return reader.read()


@dataclass(frozen=True)
class OutgoingEmail:
    """What a provider is asked to send: provider-neutral, with attachment bytes resolved."""

    email_id: str
    from_: Address
    to: list[Address]
    subject: str | None
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: Address | None = None
    text: str | None = None
    html: str | None = None
    template_id: str | None = None
    template_data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    attachments: list[OutgoingAttachment] = field(default_factory=list)

    def all_recipients(self) -> Iterator[Address]:
        yield from self.to
        yield from self.cc
        yield from self.bcc


class UnsupportedFeature(Exception):
    """The provider cannot do what the email asks (raised loudly, never silently dropped)."""


class Provider(Protocol):
    """Sends one email. Returns a normalized outcome; raises only for programming errors.

    ``prepare`` builds the provider's own request (the SendGrid body, the MIME
    message) without sending anything; the dispatch handler calls it before it
    commits an attempt, so an email the provider cannot express fails for good with
    the reason instead of waiting in ``dispatching``. Whatever ``prepare`` raises is
    taken as that reason: building a request is computation on the email alone.
    ``send`` builds the same request again (and, should that ever raise, answers
    ``Outcome.REJECTED``: nothing left the process).

    A provider may decline to try (``Outcome.POSTPONED``, e.g. its circuit is open):
    the email then waits until the outcome's ``retry_at`` without spending an attempt.

    A provider may also have a ``lookup`` attribute (a ``MessageLookup``, or None):
    the optional capability to say whether it holds a message for an email id.
    ``lookup_of`` reads it; a provider without one leaves the callback wait as the rule.
    """

    name: str

    def prepare(self, email: OutgoingEmail) -> None:
        """Build the request for ``email`` and drop it; raise if it cannot be built."""

    def send(self, email: OutgoingEmail) -> SendOutcome: ...


@dataclass(frozen=True)
class LookupAnswer:
    """What the provider's own records say about one email id."""

    held: bool | None
    """True: it holds a message with this email id; False: it holds none; None: it could not say."""
    provider_message_id: str | None = None
    reason: str | None = None
    """Why it could not say (None answers only)."""

    @classmethod
    def unavailable(cls, reason: str) -> LookupAnswer:
        return cls(held=None, reason=reason)


class MessageLookup(Protocol):
    """Asks the provider whether it holds a message carrying ``email_id`` (one request per id)."""

    def __call__(self, email_id: str) -> LookupAnswer: ...


def send_many(provider: Provider, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
    """Send a batch: through the provider's own ``send_many`` where it has one (the provider gate: one
    admission for the batch, several calls in flight), else one email after another. The outcomes are
    in the order of ``emails``."""
    own: Callable[[Sequence[OutgoingEmail]], list[SendOutcome]] | None = getattr(provider, "send_many", None)
    if own is not None:
        return own(emails)
    return [provider.send(email) for email in emails]


def lookup_of(provider: Provider) -> MessageLookup | None:
    """The provider's lookup capability, or None where it has none (or it is switched off)."""
    found: MessageLookup | None = getattr(provider, "lookup", None)
    return found
