"""The file provider writes each email as a standard .eml file a mail client could open."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from emailer.adapters.providers.file import FileProvider
from handlers.ports import Outcome, OutgoingAttachment
from tests.factories import PDF_BYTES, PNG_BYTES, outgoing_email


def read(path: Path) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def test_an_email_becomes_a_parseable_eml_file(tmp_path: Path) -> None:
    outcome = FileProvider(tmp_path).send(outgoing_email())

    assert outcome.outcome is Outcome.ACCEPTED
    assert outcome.provider_message_id == "order-42@emailer.local"
    message = read(tmp_path / "order-42.eml")
    assert message["Subject"] == "Your order has shipped"
    assert message["From"].addresses[0].addr_spec == "shop@example.com"
    assert message["From"].addresses[0].display_name == "The Shop"
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["grace@example.com"]
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert message["Message-ID"] == "<order-42@emailer.local>"
    assert message["X-Emailer-Email-Id"] == "order-42"
    assert message["X-Emailer-Bcc"] == "audit@example.com"
    assert message["X-Emailer-Categories"] == "orders"
    assert message["X-Order-Ref"] == "42"
    assert message["Date"] is not None
    assert "Bcc" not in message


def test_text_and_html_are_alternatives(tmp_path: Path) -> None:
    FileProvider(tmp_path).send(outgoing_email())
    message = read(tmp_path / "order-42.eml")

    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and plain.get_content().strip() == "It is on its way."
    assert html is not None and "<b>way</b>" in html.get_content()


def test_attachments_keep_their_names_types_and_exact_bytes(tmp_path: Path) -> None:
    FileProvider(tmp_path).send(outgoing_email())
    message = read(tmp_path / "order-42.eml")

    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(attachments) == {"invoice.pdf", "label.png"}
    assert attachments["invoice.pdf"].get_content_type() == "application/pdf"
    assert attachments["invoice.pdf"].get_content_disposition() == "attachment"
    assert attachments["invoice.pdf"].get_payload(decode=True) == PDF_BYTES
    assert attachments["label.png"].get_content_type() == "image/png"
    assert attachments["label.png"].get_payload(decode=True) == PNG_BYTES


def test_an_inline_attachment_carries_its_content_id(tmp_path: Path) -> None:
    logo = OutgoingAttachment("logo.png", "image/png", PNG_BYTES, disposition="inline", content_id="logo")
    FileProvider(tmp_path).send(outgoing_email(attachments=[logo], html='<img src="cid:logo">'))
    message = read(tmp_path / "order-42.eml")

    [part] = [p for p in message.walk() if p.get_filename() == "logo.png"]
    assert part["Content-ID"] == "<logo>"
    assert part.get_content_disposition() == "inline"
    assert part.get_payload(decode=True) == PNG_BYTES


def test_sending_the_same_email_again_changes_nothing(tmp_path: Path) -> None:
    provider = FileProvider(tmp_path)
    first = provider.send(outgoing_email())
    path = tmp_path / "order-42.eml"
    written = path.read_bytes()

    second = provider.send(outgoing_email(subject="A different subject"))

    assert second == first
    assert path.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["order-42.eml"]


def test_the_folder_is_created_when_missing(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "outbox"
    FileProvider(directory).send(outgoing_email(attachments=[], html=None))
    assert read(directory / "order-42.eml").get_content().strip() == "It is on its way."


def test_a_template_cannot_be_rendered_locally(tmp_path: Path) -> None:
    outcome = FileProvider(tmp_path).send(
        outgoing_email(text=None, html=None, subject=None, template_id="d-123", template_data={"a": 1})
    )

    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reason is not None and "template" in outcome.reason
    assert list(tmp_path.iterdir()) == []
