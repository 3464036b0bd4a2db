"""Recoverability: what happens to a message whose handler failed (NServiceBus's model, counted in headers).

A failing message is tried again ``immediate_retries`` times at once, then
once after each delay of ``delays`` (the delayed retries: 10 s, 20 s, 30 s by
default), then it goes to the error queue. So a message that always fails is
tried ``1 + immediate_retries + len(delays)`` times. (NServiceBus repeats its
immediate retries within every delayed round; Emailer does not: once its
immediate retries are spent, each delayed retry is one attempt.)

The counts travel in the message's headers (``contracts.wire.H.IMMEDIATE_RETRIES``,
``H.RETRIES``, ``H.RETRIES_TIMESTAMP``), never in a worker's memory: a retry
republishes the message with its counts raised (confirmed by the broker) and
only then acks the delivery it replaces. A crash in between leaves a duplicate,
which the inbox absorbs; the count itself is never lost, whichever worker
takes the message next.

What never reaches this policy:

* a message that cannot be decoded, fails its contract, or claims to be an
  internal command without Emailer's signature (``InvalidMessage``; also a
  ``DomainError``): it goes to the error queue at once, no retry can help;
* an infrastructure failure (``emailer.infrastructure``): the database, broker
  or object store is down, which says nothing about the message; the consumer
  pauses and hands the same deliveries again, spending no retry.

A delivery that comes back redelivered without this process having given it
back (its worker died while handling it) counts as a failed attempt
(``ABANDONED``): a message that kills its worker every time still ends in the
error queue after ``1 + immediate_retries + len(delays)`` deaths.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from contracts.wire import H, wire_time

ABANDONED = "delivered again after a worker stopped while handling it (it may have crashed it)"


class AttemptAbandoned(Exception):
    """The reason recorded when the failed attempt was a worker that died (no exception to show)."""


@dataclass(frozen=True)
class Retry:
    """Publish the message again with ``headers`` (the raised counts) after ``delay`` seconds (0: at once)."""

    headers: dict[str, str]
    delay: float = 0.0

    @property
    def immediate(self) -> bool:
        return self.delay <= 0


@dataclass(frozen=True)
class MoveToError:
    """Every retry is spent: to the error queue, with these counts among its failure headers."""

    headers: dict[str, str]


@dataclass(frozen=True)
class RecoverabilityPolicy:
    immediate_retries: int = 5
    delays: tuple[float, ...] = (10.0, 20.0, 30.0)
    """One delay (seconds) per delayed retry; ``()`` turns delayed retries off."""

    @property
    def attempts(self) -> int:
        """How many times a message that always fails is handed to its handler."""
        return 1 + self.immediate_retries + len(self.delays)

    def decide(self, headers: Mapping[str, str], now: datetime) -> Retry | MoveToError:
        immediate, delayed = counts(headers)
        if immediate < self.immediate_retries:
            return Retry({H.IMMEDIATE_RETRIES: str(immediate + 1)})
        if delayed < len(self.delays):
            return Retry(
                {
                    H.IMMEDIATE_RETRIES: str(immediate),
                    H.RETRIES: str(delayed + 1),
                    H.RETRIES_TIMESTAMP: wire_time(now),
                },
                delay=self.delays[delayed],
            )
        return MoveToError({H.IMMEDIATE_RETRIES: str(immediate), H.RETRIES: str(delayed)})


def counts(headers: Mapping[str, str]) -> tuple[int, int]:
    """(immediate retries, delayed retries) a message carries; absent or unreadable counts are 0."""
    return _count(headers.get(H.IMMEDIATE_RETRIES)), _count(headers.get(H.RETRIES))


def _count(value: str | None) -> int:
    try:
        return max(0, int(str(value).strip())) if value is not None else 0
    except ValueError:
        return 0


class SeenHere:
    """Message ids delivered to this process before (the latest ``limit`` of them).

    A redelivered message among them is one this process gave back (a requeue,
    a consumer that stopped, a connection it lost) and is still here to handle;
    any other redelivered message was held by a worker that is gone, most often
    because it died, which counts as a failed attempt. (A connection lost by a
    worker that lives on counts too when another worker takes its messages: a
    retry spent, never a message lost.)
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, message_id: str) -> None:
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids
