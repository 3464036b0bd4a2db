"""DispatchEmail in batches: one claim, one admission, the calls together, one record, one publish round.

The handler over the in-memory fakes (state and messages), and the pipeline's
batch route over a fake relay and deliveries (what is acked, what is published
in how many rounds).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import DispatchEmail, SendEmail
from contracts.commands import MAX_DISPATCH_IDS
from contracts.wire import H
from emailer.adapters.providers.gate import Admission, DrainRate, ProviderGate
from emailer.domain import EmailStatus, RetryPolicy
from handlers import unit_of_work
from handlers.dispatch_email import Dispatch, dispatch_emails, dispatch_messages
from handlers.ports import (
    BlobStoreUnavailable,
    MessageContext,
    Outcome,
    OutgoingEmail,
    OutgoingMessage,
    SendOutcome,
)
from handlers.send_email import send_email as handle_send_email
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeProviderState, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))


class CountingState(FakeProviderState):
    """Counts the admissions asked for (one per batch, not one per send)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def admit(
        self, provider: str, now: datetime, rate: DrainRate, probe_wait: timedelta, count: int = 1
    ) -> Admission:
        self.asked.append(count)
        return super().admit(provider, now, rate, probe_wait, count)


def accepted_emails(uow: FakeUnitOfWork, clock: FakeClock, n: int, blobs: FakeBlobStore) -> list[str]:
    ids = []
    for i in range(n):
        command = send_email()
        with uow:
            uow.context = MessageContext(f"send-{i}", "SendEmail", {H.CORRELATION_ID: f"corr-{i}"})
            handle_send_email(command, uow, blobs, clock, POLICY)
            uow.commit()
        ids.append(command.email_id)
    return ids


def batch_of(ids: list[str]) -> list[Dispatch]:
    return [
        Dispatch(DispatchEmail(email_id=i), MessageContext(f"dispatch-{n}", "DispatchEmail", {}))
        for n, i in enumerate(ids)
    ]


def test_a_batch_is_claimed_sent_and_recorded_in_two_commits_with_one_admission(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    ids = accepted_emails(uow, clock, 5, blobs)
    state = CountingState()
    gate = ProviderGate(provider, state, clock, concurrency=4)
    commits_before = uow.commits
    errors = dispatch_emails(batch_of(ids), uow, blobs, gate, clock, POLICY)
    gate.close()
    assert errors == [None] * 5
    assert uow.commits - commits_before == 2  # the claim, the outcomes
    assert state.asked == [5]
    assert sorted(e.email_id for e in provider.sent) == sorted(ids)
    assert all(uow.store.emails[i].status is EmailStatus.ACCEPTED for i in ids)
    started = {m.headers[H.RELATED_TO]: m for m in uow.published("EmailDeliveryStarted")}
    # Each event answers its own DispatchEmail, under its own email's correlation id.
    for n, email_id in enumerate(ids):
        event = started[f"dispatch-{n}"]
        assert email_id.encode() in event.body
        assert event.headers[H.CORRELATION_ID] == f"corr-{n}"


def test_an_email_another_transaction_holds_is_left_to_it_and_not_attempted(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    busy, free = accepted_emails(uow, clock, 2, blobs)
    uow.store.locked.add(busy)
    errors = dispatch_emails(batch_of([busy, free]), uow, blobs, provider, clock, POLICY)
    assert errors == [None, None]  # settled: the holder (the scheduler) asks again if it is still due
    assert [e.email_id for e in provider.sent] == [free]
    assert uow.store.emails[busy].status is EmailStatus.QUEUED
    assert uow.store.emails[busy].attempts == 0


def test_the_same_email_twice_in_a_batch_is_sent_once(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    (email_id,) = accepted_emails(uow, clock, 1, blobs)
    errors = dispatch_emails(batch_of([email_id, email_id]), uow, blobs, provider, clock, POLICY)
    assert errors == [None, None]
    assert len(provider.sent) == 1
    assert len(uow.published("EmailDeliveryStarted")) == 1


def test_a_conflict_while_recording_falls_back_to_one_transaction_per_email(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    ids = accepted_emails(uow, clock, 3, blobs)

    def callback_meanwhile() -> None:
        uow.conflicts = 1  # the batch's record commit meets a concurrent change

    errors = dispatch_emails(batch_of(ids), uow, blobs, provider, clock, POLICY, callback_meanwhile)
    assert errors == [None] * 3
    assert len(provider.sent) == 3  # nothing resent by the fallback
    assert all(uow.store.emails[i].status is EmailStatus.ACCEPTED for i in ids)
    assert len(uow.published("EmailDeliveryStarted")) == 3


def test_a_failed_claim_attempts_nothing_and_every_message_is_retried(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    ids = accepted_emails(uow, clock, 2, blobs)

    class DatabaseDown(FakeUnitOfWork):
        def _begin(self) -> None:
            raise ConnectionError("the database is gone")

    down = DatabaseDown(clock, uow.store)
    errors = dispatch_emails(batch_of(ids), down, blobs, provider, clock, POLICY)
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert provider.sent == []
    assert all(uow.store.emails[i].attempts == 0 for i in ids)


def test_a_failed_record_leaves_the_attempts_unsettled_never_resent(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    """The database went away after the calls: the emails wait in dispatching (unknown outcome rule)."""
    ids = accepted_emails(uow, clock, 2, blobs)
    calls: list[int] = []

    class GoneAfterClaim(FakeUnitOfWork):
        def _begin(self) -> None:
            calls.append(1)
            if len(calls) > 1:
                raise ConnectionError("the database is gone")
            super()._begin()

    flaky = GoneAfterClaim(clock, uow.store)
    errors = dispatch_emails(batch_of(ids), flaky, blobs, provider, clock, POLICY)
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert all(uow.store.emails[i].status is EmailStatus.DISPATCHING for i in ids)
    # Redelivered, the same messages find nothing due: no second call.
    again = dispatch_emails(batch_of(ids), uow, blobs, provider, clock, POLICY)
    assert again == [None, None]
    assert len(provider.sent) == 2


def test_the_drain_rate_admits_part_of_a_batch_and_postpones_the_rest(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    ids = accepted_emails(uow, clock, 5, blobs)
    gate = ProviderGate(provider, FakeProviderState(), clock, rate=DrainRate.of(2))
    errors = dispatch_emails(batch_of(ids), uow, blobs, gate, clock, POLICY)
    assert errors == [None] * 5
    assert len(provider.sent) == 2  # the burst of one second's worth
    waiting = [uow.store.emails[i] for i in ids if uow.store.emails[i].status is EmailStatus.QUEUED]
    assert len(waiting) == 3
    assert all(e.attempts == 0 and e.not_before is not None and e.not_before > clock.now() for e in waiting)


def test_a_provider_that_raises_leaves_that_email_with_an_unknown_outcome_and_the_rest_recorded(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    class RaisesOnce(RecordingProvider):
        def send(self, email: object) -> SendOutcome:
            if not self.sent:
                self.sent.append(email)  # type: ignore[arg-type]
                raise RuntimeError("a bug in the provider")
            return super().send(email)  # type: ignore[arg-type]

    provider = RaisesOnce()
    ids = accepted_emails(uow, clock, 3, blobs)
    gate = ProviderGate(provider, FakeProviderState(), clock)
    assert dispatch_emails(batch_of(ids), uow, blobs, gate, clock, POLICY) == [None] * 3
    statuses = sorted(uow.store.emails[i].status.value for i in ids)
    assert statuses == ["accepted", "accepted", "dispatching"]
    unknown = [i for i in ids if "attempt_outcome_unknown" in uow.store.timeline[i]]
    assert len(unknown) == 1 and uow.store.emails[unknown[0]].status is EmailStatus.DISPATCHING


def test_the_pipeline_hands_a_batch_of_dispatches_over_at_once_and_publishes_in_one_round(
    clock: FakeClock, provider: RecordingProvider, blobs: FakeBlobStore
) -> None:
    from emailer.endpoint.pipeline import MessagePipeline
    from emailer.endpoint.registry import Registry, Route
    from emailer.signing import Signer
    from tests.fakes import FakeRelay, _Store
    from tests.unit.test_pipeline import FakeDelivery, FakeErrorQueue, signed

    store, signer, relay = _Store(), Signer.generated(), FakeRelay()
    uow = FakeUnitOfWork(clock, store)
    ids = accepted_emails(uow, clock, 3, blobs)
    registry = Registry(
        [
            Route(
                DispatchEmail,
                lambda m, u: None,  # never used: the batch handler takes them
                transactional=False,
                batch=lambda items, u: dispatch_emails(
                    [Dispatch(m, c) for m, c in items], u, blobs, provider, clock, POLICY
                ),
            )
        ]
    )
    pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
        registry, lambda: FakeUnitOfWork(clock, store), relay, FakeErrorQueue(), signer=signer
    )
    deliveries = [signed(signer, f"d{i}", "DispatchEmail", {"email_id": e}) for i, e in enumerate(ids)]
    pipeline.handle_batch(deliveries)
    assert all(d.acked for d in deliveries)
    assert len(provider.sent) == 3
    assert relay.publisher.calls == 1  # one publish round (confirms awaited together)
    assert sorted(m.headers[H.RELATED_TO] for m in relay.publisher.published) == ["d0", "d1", "d2"]


@pytest.mark.parametrize(
    "answer",
    [
        SendOutcome(Outcome.MISCONFIGURED, reason="SendGrid refused the API key (HTTP 401)", status=401),
        SendOutcome(Outcome.TRANSIENT, reason="HTTP 429", status=429, retry_after=timedelta(seconds=20)),
    ],
    ids=["refused-key", "rate-limited"],
)
def test_an_answer_that_pauses_the_provider_stops_the_rest_of_the_batch(
    uow: FakeUnitOfWork,
    clock: FakeClock,
    provider: RecordingProvider,
    blobs: FakeBlobStore,
    answer: SendOutcome,
) -> None:
    ids = accepted_emails(uow, clock, 4, blobs)
    provider.outcomes.append(answer)
    gate = ProviderGate(provider, FakeProviderState(), clock)
    assert dispatch_emails(batch_of(ids), uow, blobs, gate, clock, POLICY) == [None] * 4
    assert len(provider.sent) == 1  # the rest waits for the pause, as a later batch would
    held = [uow.store.emails[i] for i in ids[1:]]
    assert all(e.status is EmailStatus.QUEUED and e.attempts == 0 for e in held)
    assert all(e.not_before is not None and e.not_before >= clock.now() + timedelta(seconds=20) for e in held)


class Crash(BaseException):
    """The process dies (a SIGKILL), after the provider calls of a slice and before their outcomes."""


def test_a_crash_leaves_unknown_only_the_emails_whose_calls_could_have_been_under_way(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    """A batch of 6 with 2 calls in flight goes in slices of 2, the next slice claimed while the calls
    of one are in flight: a crash after the first slice's calls leaves those 2 and the 2 claimed meanwhile
    (not sent) in ``dispatching`` (unknown outcome, never resent blind) and the last 2 queued, not
    attempted (their DispatchEmail is redelivered), instead of the whole batch held as unknown."""
    ids = accepted_emails(uow, clock, 6, blobs)

    def die() -> None:
        raise Crash

    with pytest.raises(Crash):
        dispatch_emails(batch_of(ids), uow, blobs, provider, clock, POLICY, die, slice_size=2)
    assert [e.email_id for e in provider.sent] == ids[:2]
    statuses = [uow.store.emails[i].status for i in ids]
    assert statuses == [EmailStatus.DISPATCHING] * 4 + [EmailStatus.QUEUED] * 2


def test_slices_of_the_calls_in_flight_answer_for_every_dispatch_in_order(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    ids = accepted_emails(uow, clock, 5, blobs)
    commits_before = uow.commits
    assert dispatch_emails(batch_of(ids), uow, blobs, provider, clock, POLICY, slice_size=2) == [None] * 5
    assert uow.commits - commits_before == 6  # three slices: a claim and a record each
    assert all(uow.store.emails[i].status is EmailStatus.ACCEPTED for i in ids)
    assert sorted(e.email_id for e in provider.sent) == sorted(ids)


class WatchingProvider(RecordingProvider):
    """Holds each call until the handler has done, meanwhile, what should overlap it (bounded wait):
    the first slice's call until the second slice is claimed, the second's until the first is recorded."""

    def __init__(self, uow: FakeUnitOfWork, first: str, second: str) -> None:
        super().__init__()
        self.uow, self.first, self.second = uow, first, second
        self.seen: list[bool] = []

    def send(self, email: OutgoingEmail) -> SendOutcome:
        emails = self.uow.store.emails

        def overlap() -> bool:
            if email.email_id == self.first:
                return emails[self.second].status is EmailStatus.DISPATCHING
            return emails[self.first].status is EmailStatus.ACCEPTED

        deadline = time.monotonic() + 5.0
        while not overlap() and time.monotonic() < deadline:
            time.sleep(0.001)
        self.seen.append(overlap())
        return super().send(email)


def test_the_next_slice_is_claimed_and_the_last_one_recorded_while_calls_are_in_flight(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    """The database's round trips hide behind the provider's: while the first slice's call is in
    flight the second slice is claimed, and while the second's is in flight the first is recorded."""
    first, second = accepted_emails(uow, clock, 2, blobs)
    provider = WatchingProvider(uow, first, second)
    assert dispatch_emails(batch_of([first, second]), uow, blobs, provider, clock, POLICY, slice_size=1) == [
        None,
        None,
    ]
    assert provider.seen == [True, True]
    assert [e.email_id for e in provider.sent] == [first, second]


class SlowFirstAnswer(RecordingProvider):
    """The first call answers once a second call has started, or after 0.5 s: calls that go together
    are all under way before the first answer, as against a real provider."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.lock = threading.Lock()

    def send(self, email: OutgoingEmail) -> SendOutcome:
        with self.lock:
            self.started += 1
            first = self.started == 1
        deadline = time.monotonic() + 0.5
        while first and self.started == 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        return super().send(email)


def test_until_the_provider_has_answered_a_batch_first_call_goes_alone(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    """Slow start: a worker's first batch against a refused key costs one request, not a wave of them;
    once the provider has answered, a batch's calls go together."""
    ids = accepted_emails(uow, clock, 8, blobs)
    provider = SlowFirstAnswer()
    provider.outcomes.append(SendOutcome(Outcome.MISCONFIGURED, reason="HTTP 401", status=401))
    gate = ProviderGate(provider, FakeProviderState(), clock, concurrency=8)
    assert dispatch_emails(batch_of(ids[:4]), uow, blobs, gate, clock, POLICY) == [None] * 4
    assert len(provider.sent) == 1  # the rest waited for the answer, and then for the pause
    assert all(uow.store.emails[i].status is EmailStatus.QUEUED for i in ids[:4])
    gate = ProviderGate(provider, FakeProviderState(), clock, concurrency=8)  # a corrected key, restarted
    assert dispatch_emails(batch_of(ids[4:]), uow, blobs, gate, clock, POLICY) == [None] * 4
    assert len(provider.sent) == 5
    assert all(uow.store.emails[i].status is EmailStatus.ACCEPTED for i in ids[4:])


# ----------------------------------------------------------- packed DispatchEmails


def accepted_together(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, commands: list[SendEmail]
) -> list[OutgoingMessage]:
    """The commands accepted in ONE commit (a consumer batch): what it wrote."""
    with uow:
        for i, command in enumerate(commands):
            uow.context = MessageContext(f"send-{i}", "SendEmail", {H.CORRELATION_ID: f"corr-{i}"})
            handle_send_email(command, uow, blobs, clock, POLICY)
            uow.collect()
        return uow.commit()


def test_one_commit_writes_one_dispatch_message_for_every_email_it_made_due(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    commands = [send_email() for _ in range(3)]
    written = accepted_together(uow, clock, blobs, commands)
    # Where the first email's DispatchEmail was asked for, before the events.
    assert [m.message_type for m in written] == ["DispatchEmail", *["EmailQueued"] * 3]
    body = json.loads(written[0].body)
    assert body == {"email_id": commands[0].email_id, "more_email_ids": [c.email_id for c in commands[1:]]}
    assert written[0].headers[H.CORRELATION_ID] == "corr-0"  # the first email's message's
    assert DispatchEmail.model_validate_json(written[0].body).email_ids() == [c.email_id for c in commands]


def test_a_commit_of_one_email_writes_the_dispatch_message_as_it_always_was(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    command = send_email()
    written = accepted_together(uow, clock, blobs, [command])
    [dispatch] = [m for m in written if m.message_type == "DispatchEmail"]
    assert json.loads(dispatch.body) == {"email_id": command.email_id}


def test_a_commit_that_wakes_more_than_a_pack_writes_several_in_order(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unit_of_work, "DISPATCH_PACK", 2)
    commands = [send_email() for _ in range(5)]
    written = accepted_together(uow, clock, blobs, commands)
    packs = [DispatchEmail.model_validate_json(m.body) for m in written if m.message_type == "DispatchEmail"]
    assert [p.email_ids() for p in packs] == [[c.email_id for c in commands[i : i + 2]] for i in (0, 2, 4)]


def test_a_rolled_back_transaction_asks_for_no_dispatch(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore
) -> None:
    with pytest.raises(RuntimeError), uow:
        handle_send_email(send_email(), uow, blobs, clock, POLICY)
        uow.collect()
        raise RuntimeError("the batch failed")
    command = send_email()
    written = accepted_together(uow, clock, blobs, [command])
    [dispatch] = [m for m in written if m.message_type == "DispatchEmail"]
    assert json.loads(dispatch.body) == {"email_id": command.email_id}


def test_a_packed_message_dispatches_every_email_and_a_retry_only_those_not_attempted(
    uow: FakeUnitOfWork, clock: FakeClock, blobs: FakeBlobStore, provider: RecordingProvider
) -> None:
    """One email of the pack cannot be built now (its blob store does not answer): the message is
    retried; the emails it did attempt are not due any more, so the retry sends only that one."""
    with_attachment, plain = send_email(), [send_email(attachments=[]) for _ in range(2)]
    written = accepted_together(uow, clock, blobs, [plain[0], with_attachment, plain[1]])
    [message] = [m for m in written if m.message_type == "DispatchEmail"]
    pack = (
        DispatchEmail.model_validate_json(message.body),
        MessageContext(message.message_id, "DispatchEmail"),
    )
    single = (DispatchEmail(email_id=send_email().email_id), MessageContext("other", "DispatchEmail"))
    blobs.unavailable = True
    errors = dispatch_messages([pack, single], uow, blobs, provider, clock, POLICY)
    assert isinstance(errors[0], BlobStoreUnavailable)
    assert errors[1] is None  # not stored: nothing to do, settled
    assert sorted(e.email_id for e in provider.sent) == sorted(c.email_id for c in plain)
    blobs.unavailable = False
    assert dispatch_messages([pack], uow, blobs, provider, clock, POLICY) == [None]
    assert sorted(e.email_id for e in provider.sent) == sorted(c.email_id for c in [*plain, with_attachment])
    assert all(uow.store.emails[c.email_id].status is EmailStatus.ACCEPTED for c in [*plain, with_attachment])


def test_more_email_ids_are_email_ids_and_a_pack_has_a_bound() -> None:
    with pytest.raises(ValidationError):
        DispatchEmail.model_validate({"email_id": "a", "more_email_ids": ["not an id!"]})
    with pytest.raises(ValidationError):
        DispatchEmail.model_validate({"email_id": "a", "more_email_ids": ["b"] * MAX_DISPATCH_IDS})
    assert DispatchEmail.model_validate({"email_id": "a"}).email_ids() == ["a"]


def test_a_big_batch_has_its_first_events_published_while_it_goes_on(
    clock: FakeClock, blobs: FakeBlobStore
) -> None:
    """A consumer batch of packed messages may hold thousands of emails: each slice's outcomes go to the
    relay as they are recorded, not all once the batch is over."""
    from emailer.endpoint.pipeline import MessagePipeline
    from emailer.endpoint.registry import Registry, Route
    from emailer.signing import Signer
    from tests.fakes import FakeRelay, _Store
    from tests.unit.test_pipeline import FakeDelivery, FakeErrorQueue, signed

    store, signer, relay = _Store(), Signer.generated(), FakeRelay()
    ids = accepted_emails(FakeUnitOfWork(clock, store), clock, 3, blobs)
    started_before_last_call: list[int] = []

    class Watching(RecordingProvider):
        def send(self, email: OutgoingEmail) -> SendOutcome:
            if email.email_id == ids[2]:
                published = relay.publisher.published
                started_before_last_call.append(
                    sum(m.message_type == "EmailDeliveryStarted" for m in published)
                )
            return super().send(email)

    provider = Watching()
    route = Route(
        DispatchEmail,
        lambda m, u: None,  # never used: the batch handler takes them
        transactional=False,
        batch=lambda items, u: dispatch_messages(items, u, blobs, provider, clock, POLICY, slice_size=1),
    )
    pipeline: MessagePipeline[FakeDelivery] = MessagePipeline(
        Registry([route]), lambda: FakeUnitOfWork(clock, store), relay, FakeErrorQueue(), signer=signer
    )
    pack = signed(signer, "d0", "DispatchEmail", {"email_id": ids[0], "more_email_ids": ids[1:]})
    pipeline.handle_batch([pack])
    assert pack.acked and len(provider.sent) == 3
    # At least the first slice's: recorded (while the second was out) before the third was sent.
    assert len(started_before_last_call) == 1 and started_before_last_call[0] >= 1
    assert sum(m.message_type == "EmailDeliveryStarted" for m in relay.publisher.published) == 3
