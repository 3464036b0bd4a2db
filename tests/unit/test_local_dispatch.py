"""The worker's local dispatch: the DispatchEmails a commit wrote are dispatched at once, on the consumer.

The message still comes round through the broker; these tests check that it
then finds nothing left to do (one provider call in all), that only our own
DispatchEmails are taken, that what the dispatch committed goes to the relay
after what the accepting commit wrote, and that a consumer with a backlog
leaves the emails to their messages.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from contracts import DispatchEmail
from contracts.wire import ENDPOINT, H
from emailer.domain import Email, EmailStatus, RetryPolicy
from emailer.endpoint.local_dispatch import LocalDispatch
from emailer.endpoint.recent import RecentEmails
from handlers.dispatch_email import Dispatch, dispatch_emails, dispatch_messages
from handlers.ports import MessageContext, OutgoingMessage
from handlers.send_email import send_email as handle_send_email
from handlers.unit_of_work import AbstractUnitOfWork
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeRelay, FakeUnitOfWork, RecordingProvider, _Store

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))
BATCH = 50


class Setup:
    def __init__(self) -> None:
        self.clock, self.store, self.blobs = FakeClock(), _Store(), FakeBlobStore()
        self.provider, self.relay = RecordingProvider(), FakeRelay()
        self.in_hand = 1
        self.recent = RecentEmails()
        self.local = LocalDispatch(
            self.batch,
            self.new_uow,
            self.relay.publish_committed,
            ENDPOINT,
            lambda: self.in_hand,
            BATCH,
            recent=self.recent,
        )

    def new_uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.clock, self.store)

    def batch(
        self, items: list[tuple[DispatchEmail, MessageContext]], uow: AbstractUnitOfWork
    ) -> list[Exception | None]:
        offered = self.recent.offer(items, uow)  # as the worker's DispatchEmail route does (bootstrap)
        return dispatch_messages(items, offered, self.blobs, self.provider, self.clock, POLICY)

    def accept(self, n: int) -> tuple[list[str], list[OutgoingMessage]]:
        """n SendEmails accepted in one commit, handed to the relay: their ids and what the commit wrote."""
        ids, written, _ = self.accepted(n)
        return ids, written

    def accepted(self, n: int) -> tuple[list[str], list[OutgoingMessage], list[Email]]:
        """``accept``, and the emails as the commit left them."""
        uow, ids = self.new_uow(), []
        with uow:
            for i in range(n):
                command = send_email()
                uow.context = MessageContext(f"send-{i}", "SendEmail", {H.CORRELATION_ID: f"corr-{i}"})
                handle_send_email(command, uow, self.blobs, self.clock, POLICY)
                uow.collect()
                ids.append(command.email_id)
            written = uow.commit()
        self.relay.publish_committed(written)
        return ids, written, uow.touched()


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_an_accepted_email_is_dispatched_at_once_and_its_message_then_finds_nothing_to_do(
    setup: Setup,
) -> None:
    ids, written = setup.accept(2)
    setup.local(written)
    assert len(setup.provider.sent) == 2
    types = [m.message_type for m in setup.relay.publisher.published]
    assert types[-2:] == ["EmailDeliveryStarted"] * 2  # after the accepting commit's EmailQueued
    assert types.index("EmailQueued") < types.index("EmailDeliveryStarted")
    # The DispatchEmail messages come round through the broker: nothing is sent again.
    dispatches = [
        Dispatch(DispatchEmail(email_id=email_id), MessageContext(f"d-{n}", "DispatchEmail"))
        for n, email_id in enumerate(ids)
    ]
    again = dispatch_emails(dispatches, setup.new_uow(), setup.blobs, setup.provider, setup.clock, POLICY)
    assert again == [None, None]
    assert len(setup.provider.sent) == 2
    assert all(setup.store.emails[i].status is EmailStatus.ACCEPTED for i in ids)


def test_only_our_own_dispatch_commands_are_taken(setup: Setup) -> None:
    ids, written = setup.accept(3)
    setup.local.input_queue = "another-endpoint"
    setup.local(written)
    assert setup.provider.sent == []
    setup.local.input_queue = ENDPOINT
    elsewhere = [
        replace(m, destination="another-endpoint") if m.message_type == "DispatchEmail" else m
        for m in written
    ]
    setup.local(elsewhere)
    assert setup.provider.sent == []
    setup.local(written)  # one DispatchEmail for the commit's three emails
    assert [m.message_type for m in written].count("DispatchEmail") == 1
    assert sorted(e.email_id for e in setup.provider.sent) == sorted(ids)


def test_a_consumer_with_a_backlog_leaves_the_emails_to_their_messages(setup: Setup) -> None:
    """Batches half full or more, lately: messages wait in the queue, acceptance comes first."""
    setup.in_hand = BATCH
    for _ in range(3):  # batches full for a while
        setup.local([])
    for _ in range(5):
        ids, written = setup.accept(2)
        setup.local(written)
    assert setup.provider.sent == []
    assert all(setup.store.emails[i].status is EmailStatus.QUEUED for i in ids)
    setup.in_hand = 2  # the backlog is taken in: batches are small again
    for _ in range(8):
        setup.local([])
    ids, written = setup.accept(1)
    setup.local(written)
    assert [e.email_id for e in setup.provider.sent] == ids


def test_the_dispatch_first_lets_the_relay_publish_what_the_accept_committed(setup: Setup) -> None:
    """It waits (bounded) for the relay before its first provider call, and not at all when it has
    nothing to dispatch."""
    waits: list[tuple[float, int]] = []

    def wait_relayed(timeout: float) -> bool:
        waits.append((timeout, len(setup.provider.sent)))
        return False  # even a relay that did not finish in time does not stop the dispatch

    setup.local.wait_relayed = wait_relayed
    setup.local([])
    assert waits == []
    _, written = setup.accept(2)
    setup.local(written)
    assert len(waits) == 1 and waits[0][1] == 0 and 0 < waits[0][0] <= 0.1
    assert len(setup.provider.sent) == 2


def test_the_emails_as_the_accept_committed_them_are_claimed_without_being_read_again(setup: Setup) -> None:
    _, written, emails = setup.accepted(2)
    setup.local(written, emails)
    assert sorted(e.email_id for e in setup.provider.sent) == sorted(e.id for e in emails)
    # The objects the accept left are the ones the dispatch went on with (the store holds copies).
    assert all(e.status is EmailStatus.ACCEPTED for e in emails)
    assert all(setup.store.emails[e.id].status is EmailStatus.ACCEPTED for e in emails)


def test_under_a_backlog_the_accepts_emails_wait_for_their_messages_claim_as_they_were_committed(
    setup: Setup,
) -> None:
    setup.in_hand = BATCH
    for _ in range(3):
        setup.local([])
    _, written, emails = setup.accepted(2)
    setup.local(written, emails)
    assert setup.provider.sent == [] and len(setup.recent) == 2  # kept for the messages
    (message,) = [m for m in written if m.message_type == "DispatchEmail"]
    command = DispatchEmail.model_validate_json(message.body)
    errors = setup.batch([(command, MessageContext(message.message_id, "DispatchEmail"))], setup.new_uow())
    assert errors == [None] and len(setup.provider.sent) == 2 and len(setup.recent) == 0
    assert all(e.status is EmailStatus.ACCEPTED for e in emails)  # the kept objects went on
