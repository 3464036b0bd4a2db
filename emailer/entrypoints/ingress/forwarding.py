"""Where a verified webhook batch goes: the bus with a publisher confirm, or this process's pipeline.

``record_reports_message`` is the one place a ``RecordDeliveryReports`` is
built for the bus (the internal-command protection adds its header there).
Its message id derives from the batch's provider event ids, so a batch
SendGrid posts again is the same message: the inbox dedupes it, and the
provider event ids dedupe what a reshuffled batch repeats.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from contracts import DeliveryReport, RecordDeliveryReports
from contracts.wire import ENDPOINT, H
from emailer.signing import Signer
from handlers.ports import MessageContext, OutgoingMessage, Publisher
from handlers.unit_of_work import outgoing

WEBHOOK_BATCH_NAMESPACE = uuid.UUID("3c9e2f0a-7b41-4d8e-b1f3-9a6c5d2e8f17")
ORIGIN = "ProviderWebhook"


class Forwarder(Protocol):
    """Makes a batch of reports durable; returns only when it is (raises otherwise)."""

    def forward(self, reports: Sequence[DeliveryReport], now: datetime) -> None: ...


def batch_message_id(reports: Sequence[DeliveryReport]) -> str:
    """The same events (in any order) give the same message id."""
    keys = sorted(f"{r.provider}/{r.provider_event_id}" for r in reports)
    return str(uuid.uuid5(WEBHOOK_BATCH_NAMESPACE, "\n".join(keys)))


def record_reports_command(reports: Sequence[DeliveryReport]) -> RecordDeliveryReports:
    return RecordDeliveryReports(reports=list(reports))


def record_reports_message(
    reports: Sequence[DeliveryReport], now: datetime, input_queue: str, signer: Signer
) -> OutgoingMessage:
    """The ``RecordDeliveryReports`` command for ``reports``, encoded and signed for Emailer's input queue.

    It is an internal command: the pipeline takes it only with a valid signature (``emailer.signing``).
    """
    message_id = batch_message_id(reports)
    message = outgoing(
        record_reports_command(reports),
        MessageContext(message_id, ORIGIN),
        message_id=message_id,
        now=now,
        reply_to=ENDPOINT,
        destination=input_queue,
    )
    headers = signer.signed_headers(message.headers, message.message_id, message.message_type, message.body)
    return replace(message, headers=headers)


class BusForwarder:
    """On the bus with a publisher confirm (``Publisher.publish`` returns once confirmed)."""

    def __init__(self, publisher: Publisher, input_queue: str, signer: Signer) -> None:
        self.publisher = publisher
        self.input_queue = input_queue
        self.signer = signer

    def forward(self, reports: Sequence[DeliveryReport], now: datetime) -> None:
        self.publisher.publish([record_reports_message(reports, now, self.input_queue, self.signer)])


class LocalForwarder:
    """Handled and committed in this process (``emailer run`` on the in-memory bus, which dies with it)."""

    def __init__(self, handle_local: Callable[[RecordDeliveryReports, MessageContext], None]) -> None:
        self.handle_local = handle_local

    def forward(self, reports: Sequence[DeliveryReport], now: datetime) -> None:
        message_id = batch_message_id(reports)
        headers = {H.CORRELATION_ID: message_id}
        self.handle_local(record_reports_command(reports), MessageContext(message_id, ORIGIN, headers))
