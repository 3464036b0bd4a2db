"""A handler that always fails, on RabbitMQ: 1 + 5 immediate + 3 delayed attempts, then `error` with headers.

The fault is injected by name (EMAILER_FAIL_HANDLING=SendEmail, off unless set);
the delays are the end-to-end stack's short ones (0.2 / 0.4 / 0.6 s) instead
of the 10 / 20 / 30 s default. Attempts are counted from the worker's log
lines; the counts on the error-queue copy come from the message's headers.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.messaging import Producer

from contracts.wire import H
from tests.e2e.conftest import DELAYS
from tests.e2e.harness import Stack, wait_until
from tests.factories import send_email_payload
from tests.faults.driver import logged

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]


def _publish(stack: Stack, body: bytes, headers: dict[str, str]) -> None:
    with Connection(stack.amqp_url) as conn:
        Producer(conn.channel()).publish(
            body, exchange="", routing_key=stack.topology.input_queue, delivery_mode=2,
            content_type="application/json", content_encoding="utf-8",
            message_id=headers[H.MESSAGE_ID], headers=headers,
        )  # fmt: skip


def _take_error(stack: Stack) -> Any:
    with Connection(stack.amqp_url) as conn:
        channel: Any = conn.channel()
        channel.auto_decode = False
        return channel.basic_get(stack.topology.error_queue, no_ack=True)


def test_a_handler_that_always_fails_is_tried_9_times_then_lands_in_error_with_its_headers(
    stack: Stack,
) -> None:
    worker = stack.start_worker({"EMAILER_FAIL_HANDLING": "SendEmail"})
    message_id = str(uuid.uuid4())
    body = json.dumps(send_email_payload(email_id=f"poison-{message_id[:8]}")).encode()
    sent_headers = {
        H.MESSAGE_ID: message_id,
        H.ENCLOSED_MESSAGE_TYPES: "SendEmail",
        H.CORRELATION_ID: "corr-poison",
        "X-Sender-Header": "kept as sent",
    }
    _publish(stack, body, sent_headers)

    failed = wait_until(lambda: _take_error(stack), 60, "the message in the error queue", interval=0.2)
    ours = [e for e in logged(worker, "pipeline.handler_failed_retrying") if e["message_id"] == message_id]
    [moved] = [e for e in logged(worker, "pipeline.moved_to_error_queue") if e["message_id"] == message_id]
    attempts = len(ours) + 1
    print(f"attempts={attempts} retry delays={[e['retry_in'] for e in ours]}")
    assert attempts == 1 + 5 + 3
    assert [e["retry_in"] for e in ours] == [0.0] * 5 + list(DELAYS)
    assert moved["immediate_retries"] == "5" and moved["delayed_retries"] == "3"

    headers = failed.headers
    assert bytes(failed.body) == body  # byte for byte
    assert {name: headers[name] for name in sent_headers} == sent_headers
    assert headers[H.FAILED_Q] == stack.topology.input_queue
    assert headers[H.TIME_OF_FAILURE].endswith(" Z")
    assert headers[H.EXCEPTION_TYPE] == "emailer.endpoint.faults.InjectedFailure"
    assert "injected failure" in headers[H.EXCEPTION_MESSAGE]
    assert "InjectedFailure" in headers[H.EXCEPTION_STACK_TRACE]
    assert len(headers[H.EXCEPTION_STACK_TRACE].encode()) <= 16 * 1024
    assert headers[H.HANDLER] == "handlers.send_email.send_email"
    assert headers[H.IMMEDIATE_RETRIES] == "5" and headers[H.RETRIES] == "3"
    assert headers[H.RETRIES_TIMESTAMP].endswith(" Z")
    assert not [name for name in headers if name.startswith("x-")]  # the broker's dead-lettering marks
    assert worker.proc.poll() is None
