"""DispatchEmail: hand stored emails to the provider and record what it said, a batch at a time.

The DispatchEmail commands of one consumer batch are handled together (a
message may wake several emails: ``DispatchEmail.more_email_ids``, one message
for what one transaction made due), in three steps around the provider calls:

1. **claim**: ONE short transaction loads the batch's emails (``claim``: locked,
   ``SKIP LOCKED``, so an email the scheduler, a callback or another worker is
   changing right now is left to them rather than conflicted with), builds the
   requests, marks each attempt as under way and commits;
2. **send**: the provider is asked for the whole batch at once (the provider
   gate admits the batch in one decision and keeps several calls in flight);
3. **record**: ONE transaction records every outcome (``Email.record_outcome``
   decides what each means). A conflicting concurrent change (a callback) makes
   it fall back to one transaction per email, each retried on fresh state.

If the process dies between 1 and 3, the emails wait in ``dispatching`` until
the provider's callback or a lookup of its records settles them (the rule is in
``emailer.domain.email``; the lookup in ``handlers.reconcile``): none is ever
sent blind a second time. An email that was not claimed is not attempted: its
DispatchEmail is redelivered, or the scheduler wakes it when its lease ends.

Before the attempt is committed both requests are built, the provider-neutral
``OutgoingEmail`` (attachment bytes from the blob store) and the provider's own
(``Provider.prepare``: the SendGrid body, the MIME message). An email that
cannot be built (a blob gone, a value the provider's builder refuses) fails for
good there, with the reason: it never waits in ``dispatching`` for an attempt
that could not have been made. A blob store that does not answer is not such a
reason: that exception is the email's, and its message is retried.

The provider may be guarded by a circuit breaker and a gate; their "not now" is
just another outcome (postponed) and this handler does not know they exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import structlog

from contracts import Address, DispatchEmail
from emailer.domain import DomainError, Email, RetryPolicy, SendOutcome
from emailer.retries import conflict_retrying
from handlers.claim_check import outgoing_attachment
from handlers.errors import ConcurrencyConflict
from handlers.ports import BlobStore, Clock, MessageContext, OutgoingEmail, Provider, send_many
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)

MAX_REASON_CHARS = 1000
NOT_CLAIMED = "not claimed (absent, not queued, busy or asked twice)"


@dataclass(frozen=True)
class Dispatch:
    """One DispatchEmail of a batch, with the context of its message (the headers of what it causes)."""

    command: DispatchEmail
    context: MessageContext


@dataclass
class _Attempt:
    """A claimed email's attempt: which dispatch asked for it and what goes to the provider."""

    index: int
    dispatch: Dispatch
    email: Email
    """As the claim committed it: the record transaction starts from it (version-checked) instead of
    loading it again."""
    request: OutgoingEmail


def dispatch_email(
    command: DispatchEmail,
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    after_provider_call: Callable[[], None] | None = None,
) -> None:
    """One DispatchEmail message (a batch of one); raises what stopped it."""
    messages = [(command, uow.context)]
    error = dispatch_messages(messages, uow, blobs, provider, clock, policy, after_provider_call)[0]
    if error is not None:
        raise error


def dispatch_messages(
    messages: Sequence[tuple[DispatchEmail, MessageContext]],
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    after_provider_call: Callable[[], None] | None = None,
    slice_size: int | None = None,
) -> list[Exception | None]:
    """The emails of every message as one batch (``dispatch_emails``); for each message, in order: None
    (done: settle it) or the first exception that stopped one of its emails (retry the message: the
    emails it did attempt are not due any more, so a retry attempts only the others)."""
    batch: list[Dispatch] = []
    owners: list[int] = []
    for index, (command, context) in enumerate(messages):
        if not command.more_email_ids:
            batch.append(Dispatch(command, context))
            owners.append(index)
            continue
        for email_id in command.email_ids():
            batch.append(
                Dispatch(DispatchEmail.model_construct(email_id=email_id, more_email_ids=()), context)
            )
            owners.append(index)
    errors: list[Exception | None] = [None] * len(messages)
    found = dispatch_emails(batch, uow, blobs, provider, clock, policy, after_provider_call, slice_size)
    for owner, error in zip(owners, found, strict=True):
        if error is not None and errors[owner] is None:
            errors[owner] = error
    return errors


def dispatch_emails(
    batch: Sequence[Dispatch],
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
    after_provider_call: Callable[[], None] | None = None,
    slice_size: int | None = None,
) -> list[Exception | None]:
    """Claim, send, record (see the module's docstring). For each dispatch of ``batch``, in order: None
    (done: settle it) or the exception that stopped it (retry it). What the transactions wrote to the
    outbox is in ``uow.committed``, or went to ``uow.relay_each_commit`` as each committed.

    ``slice_size`` (``EMAILER_DISPATCH_SLICE``): a larger batch goes claim-send-record a slice at a time,
    so a crash never leaves a whole consumer batch, most of it not sent yet, with an unknown outcome (the
    provider gate makes a slice's calls, ``EMAILER_DISPATCH_CONCURRENCY`` at once). The slices overlap:
    while one slice's calls are in flight (on the sender thread), the previous slice's outcomes are
    recorded and the next slice is claimed, so the database's round trips hide behind the provider's.
    At any moment at most two slices are between their claim and their record (one sent or being sent,
    one claimed or being recorded), and at most one slice's calls are in flight.
    """
    size = slice_size or len(batch) or 1
    slices = [batch[start : start + size] for start in range(0, len(batch), size)]
    if len(slices) == 1:
        claimed = _claimed_slice(batch, uow, blobs, provider, clock, policy)
        answers = _answers(claimed, lambda: send_many(provider, claimed.requests), after_provider_call)
        return _record_slice(claimed, answers, uow, provider, clock, policy)
    errors: list[Exception | None] = []
    with ThreadPoolExecutor(1, thread_name_prefix="dispatch-send") as sender:
        sending: tuple[_Claimed, Future[list[SendOutcome]]] | None = None
        for part in slices:
            claimed = _claimed_slice(part, uow, blobs, provider, clock, policy)  # the last slice in flight
            answered = None
            if sending is not None:
                answered = sending[0], _answers(sending[0], sending[1].result, after_provider_call)
            sending = claimed, sender.submit(send_many, provider, claimed.requests)
            if answered is not None:  # recorded while this slice's calls are in flight
                errors += _record_slice(*answered, uow, provider, clock, policy)
        assert sending is not None
        answers = _answers(sending[0], sending[1].result, after_provider_call)
        errors += _record_slice(sending[0], answers, uow, provider, clock, policy)
    return errors


@dataclass
class _Claimed:
    """A slice after its claim: the error of each of its dispatches so far, and the attempts to make."""

    errors: list[Exception | None]
    attempts: list[_Attempt]

    @property
    def requests(self) -> list[OutgoingEmail]:
        return [a.request for a in self.attempts]


def _claimed_slice(
    batch: Sequence[Dispatch],
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
) -> _Claimed:
    errors: list[Exception | None] = [None] * len(batch)
    try:
        return _Claimed(errors, _claim(batch, errors, uow, blobs, provider, clock, policy))
    except Exception as exc:  # noqa: BLE001 - nothing was attempted: every message is retried
        return _Claimed([exc] * len(batch), [])


def _answers(
    claimed: _Claimed,
    sent: Callable[[], list[SendOutcome]],
    after_provider_call: Callable[[], None] | None,
) -> list[SendOutcome] | Exception:
    """What the provider said to a slice (``sent``: its calls, or the wait for them), or what its calls
    raised (only a provider without the gate raises: the gate turns a raising call into an unknown
    outcome)."""
    if not claimed.attempts:
        return []
    try:
        outcomes = sent()
    except Exception as exc:  # noqa: BLE001 - their attempts stay unsettled; their messages are retried
        return exc
    if after_provider_call is not None:
        after_provider_call()  # a test's crash point: the provider may have them, and nothing is recorded
    return outcomes


def _record_slice(
    claimed: _Claimed,
    answers: list[SendOutcome] | Exception,
    uow: AbstractUnitOfWork,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
) -> list[Exception | None]:
    errors = claimed.errors
    if not claimed.attempts:
        return errors
    if isinstance(answers, Exception):
        recorded: list[Exception | None] = [answers] * len(claimed.attempts)
    else:
        for attempt, outcome in zip(claimed.attempts, answers, strict=True):
            log.info(
                "dispatch.outcome",
                email_id=attempt.request.email_id,
                outcome=outcome.outcome.value,
                status=outcome.status,
                reason=outcome.reason,
            )
        recorded = _record_all(claimed.attempts, answers, uow, provider.name, clock, policy)
    for attempt, error in zip(claimed.attempts, recorded, strict=True):
        errors[attempt.index] = error
    return errors


def _claim(
    batch: Sequence[Dispatch],
    errors: list[Exception | None],
    uow: AbstractUnitOfWork,
    blobs: BlobStore,
    provider: Provider,
    clock: Clock,
    policy: RetryPolicy,
) -> list[_Attempt]:
    """Mark the attempts in one transaction; the attempts to make. Both requests are built first, ours
    and the provider's own: an email that cannot be expressed fails for good with the reason, before any
    attempt is committed. A conflict (SQLite has no row locks) is retried on fresh state.

    The emails ``uow.offered`` holds for this batch (as the accept committed them) are offered to the
    first try's claim only: a try that fails may have changed them in memory."""
    ids = [d.command.email_id for d in batch]
    offered = {i: uow.offered.pop(i) for i in ids if i in uow.offered}
    for retry in conflict_retrying(ConcurrencyConflict):
        with retry, uow:
            attempts: list[_Attempt] = []
            claimed = {e.id: e for e in uow.emails.claim(ids, offered)}
            offered = {}
            asked: set[str] = set()
            now = clock.now()
            for index, dispatch in enumerate(batch):
                errors[index] = None
                email_id = dispatch.command.email_id
                email = claimed.get(email_id) if email_id not in asked else None
                asked.add(email_id)
                if email is None or not email.is_due(now):
                    status = email.status.value if email else NOT_CLAIMED
                    log.info("dispatch.not_due", email_id=email_id, status=status)
                    continue
                uow.context = dispatch.context
                try:
                    request = _request(email, blobs, provider, now)
                except Exception as exc:  # noqa: BLE001 - a blob store that does not answer: this one retries
                    errors[index] = exc
                    continue
                if request is not None:
                    email.start_attempt(now, policy)
                    attempts.append(_Attempt(index, dispatch, email, request))
                uow.collect()
            uow.commit()
    return attempts


def _request(email: Email, blobs: BlobStore, provider: Provider, now: datetime) -> OutgoingEmail | None:
    """The request to send, or None when the email cannot be expressed (then it has failed, with why)."""
    try:
        request = build_request(email, blobs)
    except LookupError as exc:  # a missing blob; a blob store that does not answer raises on
        email.fail(f"cannot build the message: {exc}", now, provider=provider.name)
        return None
    refusal = _refusal(provider, request)
    if refusal is not None:
        email.fail(refusal, now, provider=provider.name)
        return None
    return request


def _refusal(provider: Provider, request: OutgoingEmail) -> str | None:
    """Why the provider cannot build its request for this email, or None if it can."""
    try:
        provider.prepare(request)
    except Exception as exc:  # noqa: BLE001 - building is computation on this email: any error is about it
        reason = f"{provider.name} cannot build a request for this email: {type(exc).__name__}: {exc}"
        return reason[:MAX_REASON_CHARS]
    return None


def _record_all(
    attempts: list[_Attempt],
    outcomes: list[SendOutcome],
    uow: AbstractUnitOfWork,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
) -> list[Exception | None]:
    """Every outcome in one transaction; on a conflict (a callback changed one of them meanwhile) or a
    transition one email refuses, one transaction per email, so the others are not held up by it."""
    try:
        with uow:
            uow.emails.keep(a.email for a in attempts)
            now = clock.now()
            for attempt, outcome in zip(attempts, outcomes, strict=True):
                uow.context = attempt.dispatch.context
                _recorded(attempt.request.email_id, outcome, uow, provider, now, policy)
                uow.collect()
            uow.commit()
        return [None] * len(attempts)
    except (ConcurrencyConflict, DomainError) as exc:
        log.info("dispatch.record_one_by_one", size=len(attempts), reason=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - e.g. the database is gone: the attempts stay unsettled
        return [exc] * len(attempts)
    errors: list[Exception | None] = []
    for attempt, outcome in zip(attempts, outcomes, strict=True):
        uow.context = attempt.dispatch.context
        try:
            record_outcome(attempt.request.email_id, outcome, uow, provider, clock, policy)
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - this email's message is retried; the others are done
            errors.append(exc)
    return errors


def record_outcome(
    email_id: str,
    outcome: SendOutcome,
    uow: AbstractUnitOfWork,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
) -> None:
    """Record the outcome; a conflicting concurrent change (a callback) is retried on fresh state."""
    for attempt in conflict_retrying(ConcurrencyConflict):
        with attempt, uow:
            _recorded(email_id, outcome, uow, provider, clock.now(), policy)
            uow.commit()


def _recorded(
    email_id: str,
    outcome: SendOutcome,
    uow: AbstractUnitOfWork,
    provider: str,
    now: datetime,
    policy: RetryPolicy,
) -> None:
    email = uow.emails.get(email_id)
    if email is None:  # pragma: no cover - the attempt was committed; emails are never deleted
        raise LookupError(f"email {email_id} vanished during its dispatch")
    email.record_outcome(outcome, provider, now, policy)


def build_request(email: Email, blobs: BlobStore) -> OutgoingEmail:
    """The provider-neutral request; attachments are streamed from the blob store by the provider."""
    c = email.content
    by_kind: dict[str, list[Address]] = {"to": [], "cc": [], "bcc": []}
    for r in email.sendable_recipients:  # suppressed recipients are never sent to
        by_kind[r.kind].append(_address(r.address, r.name))
    attachments = [outgoing_attachment(ref, blobs) for ref in email.attachments]
    return OutgoingEmail(
        email_id=email.id,
        from_=_address(c.from_.email, c.from_.name),
        reply_to=_address(c.reply_to.email, c.reply_to.name) if c.reply_to else None,
        to=by_kind["to"],
        cc=by_kind["cc"],
        bcc=by_kind["bcc"],
        subject=c.subject,
        text=c.text,
        html=c.html,
        template_id=c.template_id,
        template_data=c.template_data,
        headers=dict(c.headers),
        categories=list(c.categories),
        attachments=attachments,
    )


def _address(email: str, name: str | None) -> Address:
    """An address as stored: validated when the SendEmail was accepted, so not validated again (the
    DNS-free email check cost more than the rest of building a request)."""
    return Address.model_construct(email=email, name=name)
