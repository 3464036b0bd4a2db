"""The SendGrid provider against the sandbox: real HTTP, the official client, every outcome."""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from contracts import Address
from emailer.adapters.providers.sendgrid import SendGridProvider
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import SandboxHandle
from handlers.ports import Outcome, OutgoingAttachment
from tests.factories import PDF_BYTES, new_api_key, outgoing_email


@pytest.fixture
def provider(sandbox: SandboxHandle, api_key: str) -> SendGridProvider:
    return SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=5.0)


def test_an_accepted_email_reaches_sendgrid_with_its_email_id(
    provider: SendGridProvider, control: SandboxClient
) -> None:
    outcome = provider.send(outgoing_email("order-42"))

    assert outcome.outcome is Outcome.ACCEPTED
    assert outcome.status == 202
    [stored] = control.wait_for_messages(1, email_id="order-42")
    assert stored["message_id"] == outcome.provider_message_id
    body = stored["body"]
    assert body["custom_args"] == {"email_id": "order-42"}
    [personalization] = body["personalizations"]
    assert personalization["custom_args"] == {"email_id": "order-42"}
    assert personalization["to"] == [{"email": "ada@example.com", "name": "Ada Lovelace"}]
    assert personalization["cc"] == [{"email": "grace@example.com"}]
    assert personalization["bcc"] == [{"email": "audit@example.com"}]
    assert body["from"] == {"email": "shop@example.com", "name": "The Shop"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert body["subject"] == "Your order has shipped"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["headers"] == {"X-Order-Ref": "42"}
    assert body["categories"] == ["orders"]


def test_attachments_arrive_base64_and_decode_to_the_bytes(
    provider: SendGridProvider, control: SandboxClient
) -> None:
    logo = OutgoingAttachment(
        "logo.png", "image/png", bytes(range(256)), disposition="inline", content_id="logo"
    )
    invoice = OutgoingAttachment("invoice.pdf", "application/pdf", PDF_BYTES)

    outcome = provider.send(outgoing_email(attachments=[invoice, logo]))

    assert outcome.outcome is Outcome.ACCEPTED
    [stored] = control.wait_for_messages(1, email_id="order-42")
    sent = {a["filename"]: a for a in stored["body"]["attachments"]}
    assert base64.b64decode(sent["invoice.pdf"]["content"]) == PDF_BYTES
    assert sent["invoice.pdf"]["type"] == "application/pdf"
    assert sent["invoice.pdf"]["disposition"] == "attachment"
    assert base64.b64decode(sent["logo.png"]["content"]) == bytes(range(256))
    assert sent["logo.png"]["disposition"] == "inline"
    assert sent["logo.png"]["content_id"] == "logo"


def test_one_provider_serves_concurrent_sends(provider: SendGridProvider, control: SandboxClient) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda i: provider.send(outgoing_email(f"e-{i}")), range(40)))

    assert {o.outcome for o in outcomes} == {Outcome.ACCEPTED}
    assert len({o.provider_message_id for o in outcomes}) == 40
    assert control.stats() == {"received": 40, "accepted": 40}
    assert len(control.messages("e-39")) == 1


def test_a_template_email_carries_its_id_and_data(provider: SendGridProvider, control: SandboxClient) -> None:
    email = outgoing_email(text=None, html=None, subject=None, template_id="d-1", template_data={"n": 1})

    assert provider.send(email).outcome is Outcome.ACCEPTED
    [stored] = control.wait_for_messages(1, email_id="order-42")
    assert stored["body"]["template_id"] == "d-1"
    assert stored["body"]["dynamic_template_data"] == {"n": 1}
    assert "content" not in stored["body"]


def test_a_wrong_key_is_a_configuration_error_and_never_named(
    sandbox: SandboxHandle, control: SandboxClient, api_key: str
) -> None:
    wrong_key = new_api_key()
    provider = SendGridProvider(api_key=wrong_key, base_url=sandbox.url, timeout=5.0)

    outcome = provider.send(outgoing_email())

    assert outcome.outcome is Outcome.MISCONFIGURED  # the gate stops dispatch; the email is not failed
    assert outcome.status == 401
    assert outcome.reason is not None and "EMAILER_SENDGRID_API_KEY" in outcome.reason
    assert wrong_key not in repr(outcome) and api_key not in repr(outcome)
    assert wrong_key not in repr(provider)
    assert control.stats() == {"received": 1, "accepted": 0}


def test_the_key_stays_out_of_debug_logs(
    provider: SendGridProvider, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    provider.send(outgoing_email())

    assert "send_request_headers" in caplog.text  # the HTTP client did log the request...
    assert api_key not in caplog.text  # ...without the key


def test_a_body_sendgrid_refuses_is_rejected_with_its_message(
    provider: SendGridProvider, control: SandboxClient
) -> None:
    crowd = [Address(email=f"user{i}@example.com") for i in range(1001)]

    outcome = provider.send(outgoing_email(to=crowd, cc=[], bcc=[]))

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.status == 400
    assert outcome.reason is not None
    assert "limit of 1000 total recipients" in outcome.reason
    assert control.messages() == []


def test_a_body_over_30_mb_is_rejected_as_too_large(provider: SendGridProvider) -> None:
    huge = OutgoingAttachment("big.bin", "application/octet-stream", b"\0" * (23 * 1024 * 1024))

    outcome = provider.send(outgoing_email(attachments=[huge]))

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.status == 413
    assert outcome.reason is not None and "too large" in outcome.reason


def test_an_outage_is_transient(provider: SendGridProvider, control: SandboxClient) -> None:
    control.set_mode("outage")

    outcome = provider.send(outgoing_email())

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.status == 503


def test_a_server_error_is_transient(provider: SendGridProvider, control: SandboxClient) -> None:
    control.set_mode("error", status=500)

    outcome = provider.send(outgoing_email())

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.status == 500


def test_a_rate_limit_is_transient_and_says_when_to_come_back(
    provider: SendGridProvider, control: SandboxClient
) -> None:
    control.set_mode("rate_limit", retry_after=7)

    outcome = provider.send(outgoing_email())

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.status == 429
    assert outcome.retry_after == timedelta(seconds=7)


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        port = unused.getsockname()[1]
        provider = SendGridProvider(api_key=new_api_key(), base_url=f"http://127.0.0.1:{port}")

        outcome = provider.send(outgoing_email())

    assert outcome.outcome is Outcome.TRANSIENT
    assert outcome.reason is not None and outcome.reason.startswith("not sent: ConnectError")
    assert outcome.status is None


def test_no_answer_within_the_timeout_is_unknown_because_it_may_still_be_taken(
    sandbox: SandboxHandle, api_key: str, control: SandboxClient
) -> None:
    control.set_mode("slow", delay=1.0)
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=0.3)

    outcome = provider.send(outgoing_email("order-slow"))

    assert outcome.outcome is Outcome.UNKNOWN
    assert outcome.reason is not None and outcome.reason.startswith("sent, but no answer came: ReadTimeout")
    # The request did arrive: the sandbox takes it once its delay is over, as SendGrid might.
    assert len(control.wait_for_messages(1, email_id="order-slow", timeout=5.0)) == 1


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there waits, unanswered, until it times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # Linux takes backlog + 1 unaccepted connections; then SYNs are dropped
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_a_connect_that_times_out_is_transient_and_bounded_by_the_connect_timeout(full_backlog: int) -> None:
    provider = SendGridProvider(
        api_key=new_api_key(), base_url=f"http://127.0.0.1:{full_backlog}", timeout=30.0, connect_timeout=0.5
    )
    started = time.monotonic()

    outcome = provider.send(outgoing_email())

    elapsed = time.monotonic() - started
    assert outcome.outcome is Outcome.TRANSIENT, outcome  # never sent: safe to send again
    assert outcome.reason is not None and outcome.reason.startswith("not sent: ConnectTimeout")
    assert elapsed < 5, f"the connect waited {elapsed:.1f}s: the 30 s read timeout applied, not 0.5 s"


def test_the_read_timeout_applies_after_connecting_not_the_connect_timeout(
    sandbox: SandboxHandle, api_key: str, control: SandboxClient
) -> None:
    control.set_mode("slow", delay=1.0)
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=5.0, connect_timeout=0.2)

    outcome = provider.send(outgoing_email("order-patient"))

    assert outcome.outcome is Outcome.ACCEPTED  # a 1 s answer is within the 5 s read timeout
