"""Builders of valid messages for tests (each test changes only what it is about)."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from contracts import Address, SendEmail
from handlers.ports import OutgoingAttachment, OutgoingEmail

PDF_BYTES = b"%PDF-1.4\n\x00\x01\x02\xff\xfe binary \r\n tail"
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def send_email_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "email_id": f"e-{uuid.uuid4().hex[:16]}",
        "from": {"email": "shop@example.com", "name": "Shop"},
        "to": [{"email": "ann@example.com", "name": "Ann"}],
        "cc": [{"email": "bob@example.org"}],
        "subject": "Your order has shipped",
        "text": "It is on its way.",
        "html": "<p>It is on its way.</p>",
        "attachments": [
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(b"%PDF-1.4 fake invoice \x00\x01\x02").decode(),
            }
        ],
        "metadata": {"order": "1234"},
    }
    payload.update(changes)
    return payload


def send_email(**changes: Any) -> SendEmail:
    return SendEmail.model_validate(send_email_payload(**changes))


def outgoing_email(email_id: str = "order-42", **changes: Any) -> OutgoingEmail:
    """What a provider is asked to send: every field set, two binary attachments."""
    fields: dict[str, Any] = {
        "email_id": email_id,
        "from_": Address(email="shop@example.com", name="The Shop"),
        "to": [Address(email="ada@example.com", name="Ada Lovelace")],
        "cc": [Address(email="grace@example.com")],
        "bcc": [Address(email="audit@example.com")],
        "reply_to": Address(email="help@example.com"),
        "subject": "Your order has shipped",
        "text": "It is on its way.",
        "html": "<p>It is on its <b>way</b>.</p>",
        "headers": {"X-Order-Ref": "42"},
        "categories": ["orders"],
        "attachments": [
            OutgoingAttachment("invoice.pdf", "application/pdf", PDF_BYTES),
            OutgoingAttachment("label.png", "image/png", PNG_BYTES),
        ],
    }
    fields.update(changes)
    return OutgoingEmail(**fields)


def new_api_key() -> str:
    """A fresh key in SendGrid's shape (``SG.<id>.<secret>``), for a sandbox of a test's own."""
    return f"SG.{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
