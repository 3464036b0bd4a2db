"""The provider port: every adapter takes the same email to the same normalized outcome.

Every adapter in ``PROVIDERS`` runs the whole suite. Features only some
providers have are listed in ``UNSUPPORTED``: an adapter that lacks one must
say so loudly (``UnsupportedFeature``, or a rejection naming it), never send
the email without it. Provider-specific behaviour (SendGrid's status codes, the
``.eml`` layout) is tested beside each adapter, not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from contracts import DispatchEmail
from emailer.adapters.providers.circuit_breaker import CircuitBreaker
from emailer.domain import Email, EmailStatus, RetryPolicy
from handlers.dispatch_email import dispatch_email
from handlers.ports import Outcome, OutgoingAttachment, OutgoingEmail, UnsupportedFeature
from tests.contract.providers import (
    ProviderFactory,
    ProviderHarness,
    file_provider,
    sendgrid_against_sandbox,
    template_email,
)
from tests.factories import PDF_BYTES, PNG_BYTES, outgoing_email, send_email
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork

# One line per adapter. A server-backed one carries its marker; the sandbox runs in this
# process, so SendGrid-against-the-sandbox needs none.
PROVIDERS = [
    pytest.param(file_provider, id="file"),
    pytest.param(sendgrid_against_sandbox, id="sendgrid-sandbox"),
]

# (adapter, an email that needs the feature, a word the refusal must name)
UNSUPPORTED = [
    pytest.param(file_provider, template_email, "template", id="file-provider-template"),
    pytest.param(
        sendgrid_against_sandbox, template_email, "template",
        id="sendgrid-sandbox-provider-template",
        marks=pytest.mark.skip(reason="SendGrid renders templates: it has every OutgoingEmail feature"),
    ),
]  # fmt: skip


@pytest.fixture(params=PROVIDERS)
def harness(request: pytest.FixtureRequest) -> Iterator[ProviderHarness]:
    factory: ProviderFactory = request.param
    with factory(request) as adapter:
        yield adapter


def test_an_email_is_accepted_with_the_providers_message_id(harness: ProviderHarness) -> None:
    outcome = harness.provider.send(outgoing_email("order-42"))

    assert outcome.outcome is Outcome.ACCEPTED
    assert outcome.provider_message_id
    assert outcome.reason is None
    [received] = harness.received("order-42")
    assert received.message_id == outcome.provider_message_id


def test_our_email_id_travels_with_the_email(harness: ProviderHarness) -> None:
    harness.provider.send(outgoing_email("order-7f3a"))
    harness.provider.send(outgoing_email("other-1"))

    [received] = harness.received("order-7f3a")
    assert received.email_id == "order-7f3a"
    assert [r.email_id for r in harness.received("other-1")] == ["other-1"]
    assert harness.received("never-sent") == []


def test_two_emails_get_two_message_ids(harness: ProviderHarness) -> None:
    first = harness.provider.send(outgoing_email("first"))
    second = harness.provider.send(outgoing_email("second"))

    assert first.provider_message_id != second.provider_message_id


def test_every_field_of_the_email_arrives(harness: ProviderHarness) -> None:
    harness.provider.send(outgoing_email("order-42"))

    [received] = harness.received("order-42")
    assert received.from_ == "shop@example.com"
    assert (received.to, received.cc, received.bcc) == (
        ["ada@example.com"],
        ["grace@example.com"],
        ["audit@example.com"],
    )
    assert received.reply_to == "help@example.com"
    assert received.subject == "Your order has shipped"
    assert received.text == "It is on its way."
    assert received.html == "<p>It is on its <b>way</b>.</p>"
    assert received.headers["X-Order-Ref"] == "42"
    assert received.categories == ["orders"]


def test_attachments_survive_byte_for_byte(harness: ProviderHarness) -> None:
    logo = OutgoingAttachment("logo.png", "image/png", PNG_BYTES, disposition="inline", content_id="logo")
    invoice = OutgoingAttachment("invoice.pdf", "application/pdf", PDF_BYTES)
    email = outgoing_email("order-42", attachments=[invoice, logo], html='<p><img src="cid:logo"></p>')

    assert harness.provider.send(email).outcome is Outcome.ACCEPTED

    [received] = harness.received("order-42")
    assert sorted(a.filename for a in received.attachments) == ["invoice.pdf", "logo.png"]
    pdf, png = received.attachment("invoice.pdf"), received.attachment("logo.png")
    assert (pdf.content_type, pdf.disposition, pdf.content_id) == ("application/pdf", "attachment", None)
    assert pdf.content == PDF_BYTES
    assert (png.content_type, png.disposition, png.content_id) == ("image/png", "inline", "logo")
    assert png.content == PNG_BYTES


def test_an_email_without_attachments_or_html_is_fine(harness: ProviderHarness) -> None:
    outcome = harness.provider.send(outgoing_email("plain", attachments=[], html=None))

    assert outcome.outcome is Outcome.ACCEPTED
    [received] = harness.received("plain")
    assert received.text == "It is on its way."
    assert received.html is None and received.attachments == []


def test_a_refused_email_is_rejected_with_a_reason_and_not_sent(harness: ProviderHarness) -> None:
    outcome = harness.provider.send(harness.refused)

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reason
    assert outcome.provider_message_id is None
    assert harness.received(harness.refused.email_id) == []


def test_an_email_it_cannot_build_is_refused_by_prepare_and_by_send_and_nothing_is_sent(
    harness: ProviderHarness,
) -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - what a builder raises is the provider's own
        harness.provider.prepare(harness.unbuildable)
    assert str(raised.value)

    outcome = harness.provider.send(harness.unbuildable)  # should it be called anyway

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reason and "cannot build" in outcome.reason
    assert harness.received(harness.unbuildable.email_id) == []


def test_dispatching_an_email_it_cannot_build_fails_it_with_the_reason_and_no_attempt(
    harness: ProviderHarness,
) -> None:
    """Not ``dispatching`` for ever: failed before an attempt is committed, the breaker untouched."""
    clock = FakeClock()
    uow = FakeUnitOfWork(clock)
    unbuildable = harness.unbuildable
    email = Email.queue(send_email(email_id=unbuildable.email_id, attachments=[]), [], clock.now())
    email.content = replace(
        email.content,
        subject=unbuildable.subject,
        text=unbuildable.text,
        html=unbuildable.html,
        template_id=unbuildable.template_id,
        template_data=unbuildable.template_data,
    )  # as an email stored before the contract refused this
    with uow:
        uow.emails.add(email)
        uow.commit()
    breaker = CircuitBreaker(harness.provider, clock, threshold=1)

    dispatch_email(DispatchEmail(email_id=email.id), uow, FakeBlobStore(), breaker, clock, RetryPolicy())

    stored = uow.store.emails[email.id]
    assert stored.status is EmailStatus.FAILED and stored.attempts == 0
    assert stored.last_error and f"{harness.provider.name} cannot build a request" in stored.last_error
    [failed] = uow.published("EmailDeliveryFailed")
    assert json.loads(failed.body)["reason"] == stored.last_error
    assert "attempt_started" not in uow.store.timeline[email.id]
    assert harness.received(email.id) == []
    assert breaker.send(outgoing_email("next")).outcome is Outcome.ACCEPTED  # not opened by it


@pytest.mark.parametrize(("factory", "needs_feature", "feature"), UNSUPPORTED)
def test_an_unsupported_feature_fails_loudly(
    request: pytest.FixtureRequest,
    factory: ProviderFactory,
    needs_feature: Callable[[], OutgoingEmail],
    feature: str,
) -> None:
    with factory(request) as harness:
        email = needs_feature()
        try:
            outcome = harness.provider.send(email)
        except UnsupportedFeature as loud:
            assert feature in str(loud)
        else:
            assert outcome.outcome is Outcome.REJECTED
            assert outcome.reason is not None and feature in outcome.reason
        assert harness.received(email.email_id) == []
