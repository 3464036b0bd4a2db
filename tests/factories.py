"""Builders of valid messages for tests (each test changes only what it is about)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from contracts import SendEmail


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
