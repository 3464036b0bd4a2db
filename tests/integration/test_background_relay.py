"""The background relay: committed rows published in order on a thread of its own, never twice by this
process's sweep, and left pending for a sweep when the broker does not take them.

Waits are bounded on real conditions (events a publisher sets), never a sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Engine

from emailer.adapters.persistence.background_relay import BackgroundRelay
from emailer.adapters.persistence.outbox import Outbox
from handlers.ports import OutgoingMessage
from tests.fakes import FakeClock, RecordingPublisher
from tests.integration.test_outbox import WAIT, pending, write


class GatedPublisher(RecordingPublisher):
    """Publishes only once ``gate`` is set; ``entered`` is set when a publish has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        super().publish(messages)


def test_batches_are_handed_over_at_once_and_published_in_commit_order(engine: Engine) -> None:
    clock, publisher = FakeClock(), GatedPublisher()
    outbox = Outbox(engine, publisher, clock)
    relay = BackgroundRelay(outbox)
    written = write(engine, clock, 4)

    assert relay.publish_committed(written[:2]) is True  # returns while the broker has not confirmed
    assert relay.publish_committed(written[2:]) is True
    assert publisher.entered.wait(WAIT) and publisher.published == []

    publisher.gate.set()
    assert relay.close(WAIT)
    assert [m.message_id for m in publisher.published] == ["msg-0", "msg-1", "msg-2", "msg-3"]
    assert pending(engine) == set()


def test_batches_committed_while_a_round_is_out_go_together_in_the_next_round(engine: Engine) -> None:
    """One confirm wait and one marking for what piled up behind a round, still in commit order."""
    clock, publisher = FakeClock(), GatedPublisher()
    outbox = Outbox(engine, publisher, clock)
    relay = BackgroundRelay(outbox)
    written = write(engine, clock, 5)
    relay.publish_committed(written[:1])
    assert publisher.entered.wait(WAIT)  # the first round is out, waiting for the broker
    relay.publish_committed(written[1:3])
    relay.publish_committed(written[3:])

    publisher.gate.set()
    assert relay.close(WAIT)
    assert publisher.calls == 2
    assert [m.message_id for m in publisher.published] == [f"msg-{i}" for i in range(5)]
    assert pending(engine) == set()


def test_the_sweep_of_this_process_leaves_the_rows_the_relay_holds(engine: Engine) -> None:
    clock, publisher = FakeClock(), GatedPublisher()
    outbox = Outbox(engine, publisher, clock)
    relay = BackgroundRelay(outbox)
    written = write(engine, clock, 3)  # msg-2: committed, never handed to the relay (a crash): the sweep's

    relay.publish_committed(written[:2])
    assert publisher.entered.wait(WAIT)
    claim = outbox.claim(timedelta(0))
    assert [m.message_id for m in claim.messages] == ["msg-2"]

    publisher.gate.set()
    assert relay.close(WAIT)
    assert [m.message_id for m in publisher.published] == ["msg-0", "msg-1"]


def test_what_the_broker_does_not_take_stays_pending_for_the_sweep(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    outbox = Outbox(engine, publisher, clock)
    relay = BackgroundRelay(outbox)
    written = write(engine, clock, 2)
    publisher.failures = [ConnectionError("broker down")]

    relay.publish_committed(written)
    assert relay.close(WAIT)
    assert pending(engine) == {"msg-0", "msg-1"} and publisher.published == []

    assert outbox.sweep(timedelta(0)) == 2  # no longer held: the sweep takes them
    assert pending(engine) == set()


def test_the_consumer_waits_once_depth_batches_are_waiting(engine: Engine) -> None:
    clock, publisher = FakeClock(), GatedPublisher()
    relay = BackgroundRelay(Outbox(engine, publisher, clock), depth=1)
    written = write(engine, clock, 3)
    relay.publish_committed(written[:1])
    assert publisher.entered.wait(WAIT)  # the relay thread is busy with the first batch
    relay.publish_committed(written[1:2])  # waits in the queue
    third_handed = threading.Event()

    def hand_third() -> None:
        relay.publish_committed(written[2:])
        third_handed.set()

    threading.Thread(target=hand_third, daemon=True).start()
    assert not third_handed.wait(0.2)  # bounded: the queue is full while the broker does not confirm
    publisher.gate.set()
    assert third_handed.wait(WAIT)
    assert relay.close(WAIT)
    assert [m.message_id for m in publisher.published] == ["msg-0", "msg-1", "msg-2"]


class MarkingOutbox(Outbox):
    """Records each publish and each marking, in the order the relay made them."""

    def __init__(self, engine: Engine, publisher: RecordingPublisher, clock: FakeClock) -> None:
        super().__init__(engine, publisher, clock)
        self.steps: list[tuple[str, list[str]]] = []

    def publish_only(self, messages: Sequence[OutgoingMessage]) -> bool:
        published = super().publish_only(messages)
        self.steps.append(("publish", [m.message_id for m in messages]))
        return published

    def mark_sent(self, message_ids: list[str]) -> bool:
        self.steps.append(("mark", list(message_ids)))
        return super().mark_sent(message_ids)


def test_what_was_committed_during_a_round_is_published_before_that_round_is_marked(engine: Engine) -> None:
    """Marking is a database round trip no subscriber waits for: the next round does not wait behind it,
    and the rows of both rounds are marked sent in one statement."""
    clock, publisher = FakeClock(), GatedPublisher()
    outbox = MarkingOutbox(engine, publisher, clock)
    relay = BackgroundRelay(outbox)
    written = write(engine, clock, 3)
    relay.publish_committed(written[:1])
    assert publisher.entered.wait(WAIT)  # the first round is out, waiting for the broker
    relay.publish_committed(written[1:])
    publisher.gate.set()
    assert relay.close(WAIT)
    assert outbox.steps == [
        ("publish", ["msg-0"]),
        ("publish", ["msg-1", "msg-2"]),
        ("mark", ["msg-0", "msg-1", "msg-2"]),
    ]
    assert pending(engine) == set()


def test_wait_relayed_returns_once_what_was_handed_over_is_published_and_is_bounded(engine: Engine) -> None:
    """The local dispatch steps aside until the accept's events are out; a broker that does not confirm
    keeps it waiting no longer than its bound."""
    clock, publisher = FakeClock(), GatedPublisher()
    relay = BackgroundRelay(Outbox(engine, publisher, clock))
    written = write(engine, clock, 3)
    assert relay.wait_relayed(0.0) is True  # nothing handed over: nothing to wait for
    relay.publish_committed(written[:1])
    assert publisher.entered.wait(WAIT)
    relay.publish_committed(written[1:])
    assert relay.wait_relayed(0.2) is False  # the broker has not confirmed: bounded
    waited = threading.Event()
    outcome: list[bool] = []

    def wait() -> None:
        outcome.append(relay.wait_relayed(WAIT))
        waited.set()

    threading.Thread(target=wait, daemon=True).start()
    assert not waited.wait(0.1)
    publisher.gate.set()
    assert waited.wait(WAIT) and outcome == [True]
    assert [m.message_id for m in publisher.published] == ["msg-0", "msg-1", "msg-2"]  # both rounds
    assert relay.close(WAIT)


def test_wait_relayed_also_returns_when_the_broker_refused_the_round(engine: Engine) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    relay = BackgroundRelay(Outbox(engine, publisher, clock))
    written = write(engine, clock, 2)
    publisher.failures = [ConnectionError("broker down")]
    relay.publish_committed(written)
    assert relay.wait_relayed(WAIT) is True  # left to the sweep: nothing more to wait for
    assert publisher.published == [] and pending(engine) == {"msg-0", "msg-1"}
    assert relay.close(WAIT)
