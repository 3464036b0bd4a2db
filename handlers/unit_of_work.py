"""The unit of work: one database transaction, and the outbox it owns.

Handlers change aggregates (and may ``send`` commands); the unit of work
collects the commands and events the aggregates produced, encodes them with
the headers of the message being handled, and on ``commit`` writes them as
outbox rows in the same transaction as the state. What was written is then handed to the relay.

One unit of work may span several incoming messages (a batch): the caller sets
``context`` before each and calls ``collect`` after each, so every outgoing
message carries the headers of the message that caused it.

Every command it sends (to Emailer itself) is signed with ``signer``
(``emailer.signing``): without one, the pipeline refuses the internal ones.

The ``DispatchEmail``s one commit asks for (an accepting batch, a scheduler
pass: one per email made due) go out packed, up to ``DISPATCH_PACK`` emails a
message (``email_id`` then ``more_email_ids``), at the place of the first: one
outbox row, one publish, one delivery to consume, one signature and one decode
for the lot, instead of one each. A pack carries the headers of its first
email's message (each email's own events still carry its own correlation ids).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Literal, Self

from contracts import Command, DispatchEmail, Event, Message
from contracts.wire import ENDPOINT, H, wire_time
from emailer.domain import Email
from emailer.signing import Signer
from handlers.ports import (
    BlobReferences,
    Clock,
    EmailRepository,
    Inbox,
    MessageContext,
    OutgoingMessage,
    ProviderEvents,
    Suppressions,
)

DISPATCH_PACK = 200
"""At most this many emails in one packed ``DispatchEmail`` (a scheduler pass wakes up to 200)."""
EVENT_ID_NAMESPACE = uuid.UUID("6f1c3a52-5d0e-4b8e-9a51-2f0e7e5b1c11")


def event_message_id(email_id: str, sequence: int) -> str:
    """The stable message id of an email's n-th event: the same however often it is published.

    ``str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{email_id}/{sequence}"))`` (a test holds it), without
    building the ``UUID`` object: one per published event, and that was most of the cost.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{email_id}/{sequence}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


class AbstractUnitOfWork(abc.ABC):
    emails: EmailRepository
    inbox: Inbox
    provider_events: ProviderEvents
    blob_refs: BlobReferences
    suppressions: Suppressions

    def __init__(self, clock: Clock, input_queue: str = ENDPOINT, *, signer: Signer | None = None) -> None:
        self.clock = clock
        self.input_queue = input_queue
        self.signer = signer
        self.context: MessageContext = MessageContext.originating()
        self._staged: list[OutgoingMessage] = []
        self._dispatches: list[tuple[str, MessageContext]] = []
        """The emails this transaction asked to dispatch, each under its context: packed at commit."""
        self._dispatches_at = 0
        """Where in ``_staged`` the first of them was asked for."""
        self.committed: list[OutgoingMessage] = []
        """Everything this unit of work's commits wrote to the outbox, for the relay to publish."""
        self.relay_each_commit: Callable[[list[OutgoingMessage]], object] | None = None
        """If set, what each commit wrote goes to it at once (the relay), instead of into ``committed``:
        a handler that commits many times (a dispatch batch, a slice at a time) has its first events
        published while it goes on, not all at its end."""
        self.offered: dict[str, Email] = {}
        """Emails as a transaction of this process committed them, for this unit of work's next claim
        (``EmailRepository.claim``): taken without reading them again where their rows are unchanged."""
        self._open = False

    # ------------------------------------------------------------ transaction

    def __enter__(self) -> Self:
        self._staged = []
        self._dispatches = []
        self._begin()
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open:
            self.rollback()

    def commit(self) -> list[OutgoingMessage]:
        """Save the aggregates and the outbox rows atomically; return what the outbox got."""
        self.collect()
        self._pack_dispatches()
        written = self._staged
        self._flush(written)
        self._commit()
        self._open = False
        self._staged = []
        if self.relay_each_commit is not None:
            self.relay_each_commit(written)
        else:
            self.committed.extend(written)
        return written

    def take_committed(self) -> list[OutgoingMessage]:
        taken, self.committed = self.committed, []
        return taken

    def rollback(self) -> None:
        self._staged = []
        self._dispatches = []
        self._open = False
        self._rollback()

    # ---------------------------------------------------------------- outbox

    def send(self, command: Command, destination: str | None = None) -> None:
        """Stage a command (to our own input queue unless told otherwise), signed. A ``DispatchEmail`` of
        one email to our own queue is packed with the others of this transaction at commit."""
        if type(command) is DispatchEmail and destination is None and not command.more_email_ids:
            if not self._dispatches:
                self._dispatches_at = len(self._staged)
            self._dispatches.append((command.email_id, self.context))
            return
        self._staged.append(self._signed(command, self.context, destination))

    def _pack_dispatches(self) -> None:
        """The asked-for dispatches as ``DispatchEmail`` messages of up to ``DISPATCH_PACK`` emails,
        where the first was asked for (see the module's docstring)."""
        if not self._dispatches:
            return
        asked, self._dispatches = self._dispatches, []
        packs = []
        for start in range(0, len(asked), DISPATCH_PACK):
            chunk = asked[start : start + DISPATCH_PACK]
            ids = [email_id for email_id, _ in chunk]  # the emails' own ids, validated when they were stored
            command = DispatchEmail.model_construct(email_id=ids[0], more_email_ids=tuple(ids[1:]))
            packs.append(self._signed(command, chunk[0][1], None))
        self._staged[self._dispatches_at : self._dispatches_at] = packs

    def _signed(self, command: Command, context: MessageContext, destination: str | None) -> OutgoingMessage:
        message = outgoing(
            command,
            context,
            message_id=str(uuid.uuid4()),
            now=self.clock.now(),
            reply_to=self.input_queue,
            destination=destination or self.input_queue,
        )
        if self.signer is not None:
            headers = self.signer.signed_headers(
                message.headers, message.message_id, message.message_type, message.body
            )
            message = dataclasses.replace(message, headers=headers)
        return message

    def collect(self) -> None:
        """Stage the commands and events the touched aggregates produced, each under its email's context."""
        now = self.clock.now()
        current = self.context
        try:
            for email in self._touched():
                if not email.events and not email.commands and email.correlation_id is not None:
                    continue  # nothing to stage: a batch collects after each message, over all touched
                self.context = context_of(email, current)
                for command in email.pull_commands():
                    self.send(command)
                for sequence, event in email.pull_events():
                    self._staged.append(
                        outgoing(
                            event,
                            self.context,
                            message_id=event_message_id(email.id, sequence),
                            now=now,
                            reply_to=self.input_queue,
                        )
                    )
        finally:
            self.context = current

    def lookups_together(self) -> contextlib.AbstractContextManager[None]:
        """The repositories' ``preload`` lookups made inside may be answered together at its end (one round
        trip, the SQL unit of work's ``bulk.deferred_lookups``); what they found is known after it. In
        memory, at once."""
        return _at_once()

    # ------------------------------------------------------- adapter hooks

    @abc.abstractmethod
    def _begin(self) -> None: ...

    def touched(self) -> list[Email]:
        """The emails added or loaded in the last transaction; after its commit, as it saved them."""
        return self._touched()

    @abc.abstractmethod
    def _touched(self) -> list[Email]:
        """Aggregates added or loaded in this transaction."""

    @abc.abstractmethod
    def _flush(self, outbox: list[OutgoingMessage]) -> None:
        """Write changed aggregates and the outbox rows (inside the transaction)."""

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None: ...


@contextlib.contextmanager
def _at_once() -> Iterator[None]:
    yield


def context_of(email: Email, current: MessageContext) -> MessageContext:
    """The message being handled, with the correlation of the command that created ``email``.

    A new email takes the current message's ids (it is the creating command);
    work started later (the scheduler, the reconciler, a provider callback)
    keeps the conversation it belongs to. A stored email always has a
    correlation id (a row from before they were recorded loads with its own
    email id: ``persistence/mapping.py``), so only a new one is stamped here.
    """
    if email.correlation_id is None:
        email.correlation_id = current.correlation_id
        email.conversation_id = current.conversation_id
        email.dirty = True
    headers = {
        **current.headers,
        H.CORRELATION_ID: email.correlation_id,
        H.CONVERSATION_ID: email.conversation_id or email.correlation_id,
    }
    return MessageContext(current.message_id, current.message_type, headers)


def outgoing(
    message: Message,
    context: MessageContext,
    *,
    message_id: str,
    now: datetime,
    reply_to: str = ENDPOINT,
    destination: str | None = None,
) -> OutgoingMessage:
    """Encode ``message`` with the headers that tie it to the message being handled."""
    if not isinstance(message, Event | Command):  # pragma: no cover - programming error
        raise TypeError(f"{type(message).__name__} is neither a command nor an event")
    intent: Literal["Send", "Publish"] = "Publish" if isinstance(message, Event) else "Send"
    name = message.type_name()
    headers = {
        H.MESSAGE_ID: message_id,
        H.CORRELATION_ID: context.correlation_id,
        H.CONVERSATION_ID: context.conversation_id,
        H.RELATED_TO: context.message_id,
        H.ENCLOSED_MESSAGE_TYPES: name,
        H.MESSAGE_INTENT: intent,
        H.REPLY_TO_ADDRESS: reply_to,
        H.ORIGINATING_ENDPOINT: ENDPOINT,
        H.TIME_SENT: wire_time(now),
        H.CONTENT_TYPE: "application/json",
    }
    return OutgoingMessage(
        message_id=message_id,
        message_type=name,
        body=message.model_dump_json(by_alias=True).encode(),
        headers=headers,
        intent=intent,
        destination=destination or (name if intent == "Publish" else reply_to),
    )
