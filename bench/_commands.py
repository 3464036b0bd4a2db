"""The SendEmail commands every benchmark here sends: about 1 KB of JSON, one to, one cc, no attachment."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

COMMAND_BYTES = 1024


@dataclass(frozen=True)
class Command:
    message_id: str
    email_id: str
    body: bytes


def make_command(i: int, run_id: str) -> Command:
    """A realistic SendEmail of about COMMAND_BYTES bytes of JSON."""
    order = 100000 + i
    body: dict[str, Any] = {
        "email_id": f"bench-{run_id}-{i:06d}",
        "from": {"email": "orders@shop.example.com", "name": "Example Shop"},
        "to": [{"email": f"customer{i}@example.com", "name": f"Customer {i}"}],
        "cc": [{"email": f"account-manager{i % 97}@example.org"}],
        "subject": f"Your order #{order} has shipped",
        "text": "",
        "metadata": {"order_id": str(order), "customer_id": f"cust-{i}", "tenant": "bench"},
    }
    filler = (
        f"Hello Customer {i},\n\nGood news: your order #{order} is on its way. "
        "You can follow the parcel from your account page at any time. "
    )
    need = max(0, COMMAND_BYTES - len(json.dumps(body, separators=(",", ":"))))
    body["text"] = (filler * (need // len(filler) + 1))[:need]
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return Command(str(uuid.uuid4()), body["email_id"], encoded)


def sendgrid_body(command: dict[str, Any]) -> dict[str, Any]:
    """The v3 Mail Send body for a command (as Emailer's SendGrid adapter builds it), for the peers."""
    custom_args = {"email_id": command["email_id"]}
    return {
        "personalizations": [{"to": command["to"], "cc": command["cc"], "custom_args": dict(custom_args)}],
        "from": command["from"],
        "subject": command["subject"],
        "content": [{"type": "text/plain", "value": command["text"]}],
        "custom_args": custom_args,
    }
