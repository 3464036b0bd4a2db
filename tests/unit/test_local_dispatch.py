"""The worker's local dispatch: the DispatchEmails a commit wrote are dispatched at once beside the consumer.

The message still comes round through the broker; these tests check that it
then finds nothing left to do (one provider call in all), that only our own
DispatchEmails are taken, and that a full hand-over leaves them to their messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from contracts import DispatchEmail
from contracts.wire import ENDPOINT, H
from emailer.domain import EmailStatus, RetryPolicy
from emailer.endpoint.local_dispatch import LocalDispatcher
from handlers.dispatch_email import Dispatch, dispatch_emails
from handlers.ports import MessageContext, OutgoingMessage
from handlers.send_email import send_email as handle_send_email
from handlers.unit_of_work import AbstractUnitOfWork
from tests.factories import send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeRelay, FakeUnitOfWork, RecordingProvider, _Store

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))


class Setup:
    def __init__(self) -> None:
        self.clock, self.store, self.blobs = FakeClock(), _Store(), FakeBlobStore()
        self.provider, self.relay, self.stop = RecordingProvider(), FakeRelay(), threading.Event()
        self.local = LocalDispatcher(
            self.batch, self.new_uow, self.relay.publish_committed, ENDPOINT, 50, self.stop, capacity=3
        )

    def new_uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.clock, self.store)

    def batch(
        self, items: list[tuple[DispatchEmail, MessageContext]], uow: AbstractUnitOfWork
    ) -> list[Exception | None]:
        dispatches = [Dispatch(m, c) for m, c in items]
        return dispatch_emails(dispatches, uow, self.blobs, self.provider, self.clock, POLICY)

    def accept(self, n: int) -> tuple[list[str], list[OutgoingMessage]]:
        """n SendEmails accepted in one commit: their ids and what the commit wrote."""
        uow, ids = self.new_uow(), []
        with uow:
            for i in range(n):
                command = send_email()
                uow.context = MessageContext(f"send-{i}", "SendEmail", {H.CORRELATION_ID: f"corr-{i}"})
                handle_send_email(command, uow, self.blobs, self.clock, POLICY)
                uow.collect()
                ids.append(command.email_id)
            return ids, uow.commit()

    def wait_sent(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.provider.sent) < count or self.relay.publisher.calls < 1:
            assert time.monotonic() < deadline, f"{len(self.provider.sent)} of {count} sent"
            time.sleep(0.01)


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    yield s
    s.stop.set()
    if s.local.is_alive():
        s.local.join(5)


def test_an_accepted_email_is_dispatched_at_once_and_its_message_then_finds_nothing_to_do(
    setup: Setup,
) -> None:
    ids, written = setup.accept(2)
    setup.local.start()
    setup.local.offer(written)
    setup.wait_sent(2)
    assert sorted(m.message_type for m in setup.relay.publisher.published) == ["EmailDeliveryStarted"] * 2
    # The DispatchEmail messages come round through the broker: nothing is sent again.
    dispatches = [
        Dispatch(DispatchEmail(email_id=email_id), MessageContext(f"d-{n}", "DispatchEmail"))
        for n, email_id in enumerate(ids)
    ]
    again = dispatch_emails(dispatches, setup.new_uow(), setup.blobs, setup.provider, setup.clock, POLICY)
    assert again == [None, None]
    assert len(setup.provider.sent) == 2
    assert all(setup.store.emails[i].status is EmailStatus.ACCEPTED for i in ids)


def test_only_our_own_dispatch_commands_are_taken_and_a_full_hand_over_leaves_the_rest(setup: Setup) -> None:
    ids, written = setup.accept(5)
    elsewhere = [m for m in written if m.message_type == "DispatchEmail"][:1]
    setup.local.input_queue = "another-endpoint"
    setup.local.offer(elsewhere)
    setup.local.input_queue = ENDPOINT
    setup.local.offer(written)  # 5 DispatchEmails and 5 EmailQueued; room for 3
    setup.local.start()
    setup.wait_sent(3)
    assert len(setup.provider.sent) == 3
    queued = [i for i in ids if setup.store.emails[i].status is EmailStatus.QUEUED]
    assert len(queued) == 2  # left to their messages
