"""The provider adapters the provider contract suite runs against, each behind one harness.

A harness gives the suite the provider and a way to read back what reached the
far side (the ``.eml`` file, the sandbox's stored request) in one provider-neutral
shape, ``Received``, so the suite's assertions are written once.
"""

from __future__ import annotations

import base64
import email.policy
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest

from contracts import Address
from emailer.adapters.providers.file import FileProvider
from emailer.adapters.providers.sendgrid import SendGridProvider
from emailer.sandbox.client import SandboxClient
from emailer.sandbox.server import running_sandbox
from handlers.ports import OutgoingEmail, Provider
from tests.factories import outgoing_email


@dataclass(frozen=True)
class ReceivedAttachment:
    filename: str
    content_type: str
    content: bytes
    disposition: str
    content_id: str | None


@dataclass(frozen=True)
class Received:
    """One email as the far side of a provider got it."""

    email_id: str | None
    """Our email id as it travelled with the email (what callbacks are matched by)."""
    message_id: str | None
    """The provider's id for it, as the far side knows it."""
    from_: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    subject: str | None
    text: str | None
    html: str | None
    headers: dict[str, str]
    categories: list[str]
    attachments: list[ReceivedAttachment] = field(default_factory=list)

    def attachment(self, filename: str) -> ReceivedAttachment:
        [found] = [a for a in self.attachments if a.filename == filename]
        return found


@dataclass(frozen=True)
class ProviderHarness:
    provider: Provider
    received: Callable[[str], list[Received]]
    """Everything that reached the far side for this email id (empty if nothing did)."""
    refused: OutgoingEmail
    """An email this provider refuses for good (each provider refuses something)."""
    unbuildable: OutgoingEmail
    """An email this provider cannot even build a request for.

    The contract refuses these now, so each comes from an email stored before it
    did (a U+2028 in a subject, NaN in template data): ``OutgoingEmail`` is not
    validated, and a stored email is what a provider is given.
    """


ProviderFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[ProviderHarness]]


# --------------------------------------------------------------------------- the .eml file provider


@contextmanager
def file_provider(request: pytest.FixtureRequest) -> Iterator[ProviderHarness]:
    provider = FileProvider(request.getfixturevalue("tmp_path") / "outbox")

    def received(email_id: str) -> list[Received]:
        path = provider.path_for(email_id)
        return [_from_eml(path)] if path.exists() else []

    unbuildable = outgoing_email("unbuildable", subject="line\u2028separator")  # email.message refuses it
    yield ProviderHarness(provider, received, refused=template_email(), unbuildable=unbuildable)


def _from_eml(path: Path) -> Received:
    message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)

    def addresses(name: str) -> list[str]:
        return [addr for _, addr in getaddresses([str(v) for v in message.get_all(name, [])])]

    def body(kind: str) -> str | None:
        part = message.get_body(preferencelist=(kind,))
        if part is None:
            return None
        return str(part.get_content()).replace("\r\n", "\n").removesuffix("\n")  # MIME's line ends

    [sender] = addresses("From")
    reply_to = addresses("Reply-To")
    categories = str(message.get("X-Emailer-Categories", ""))
    return Received(
        email_id=message.get("X-Emailer-Email-Id"),
        message_id=str(message["Message-ID"]).strip("<>"),
        from_=sender,
        to=addresses("To"),
        cc=addresses("Cc"),
        bcc=addresses("X-Emailer-Bcc"),
        reply_to=reply_to[0] if reply_to else None,
        subject=message.get("Subject"),
        text=body("plain"),
        html=body("html"),
        headers={name: str(value) for name, value in message.items()},
        categories=categories.split(", ") if categories else [],
        attachments=[
            ReceivedAttachment(
                filename=part.get_filename() or "",
                content_type=part.get_content_type(),
                content=_payload(part),
                disposition=part.get_content_disposition() or "",
                content_id=str(part["Content-ID"]).strip("<>") if part["Content-ID"] else None,
            )
            for part in message.walk()
            if part.get_filename()
        ],
    )


def _payload(part: EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


# --------------------------------------------------------------------------- SendGrid, against the sandbox


@contextmanager
def sendgrid_against_sandbox(request: pytest.FixtureRequest) -> Iterator[ProviderHarness]:
    api_key = f"SG.{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
    with running_sandbox(api_key=api_key) as sandbox, SandboxClient(sandbox.url, api_key) as control:
        provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=10.0)

        def received(email_id: str) -> list[Received]:
            return [_from_request(m["message_id"], m["body"]) for m in control.messages(email_id)]

        crowd = [Address(email=f"user{i}@example.com") for i in range(1001)]  # SendGrid's limit is 1000
        refused = outgoing_email("refused", to=crowd, cc=[], bcc=[])
        unbuildable = template_email("unbuildable", template_data={"total": float("nan")})  # not JSON
        yield ProviderHarness(provider, received, refused=refused, unbuildable=unbuildable)


def _from_request(message_id: str, body: dict[str, Any]) -> Received:
    [personalization] = body["personalizations"]
    custom_args = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}
    content = {block["type"]: block["value"] for block in body.get("content", [])}

    def emails(kind: str) -> list[str]:
        return [a["email"] for a in personalization.get(kind, [])]

    return Received(
        email_id=custom_args.get("email_id"),
        message_id=message_id,
        from_=body["from"]["email"],
        to=emails("to"),
        cc=emails("cc"),
        bcc=emails("bcc"),
        reply_to=body["reply_to"]["email"] if "reply_to" in body else None,
        subject=body.get("subject"),
        text=content.get("text/plain"),
        html=content.get("text/html"),
        headers=dict(body.get("headers", {})),
        categories=list(body.get("categories", [])),
        attachments=[
            ReceivedAttachment(
                filename=a["filename"],
                content_type=a["type"],
                content=base64.b64decode(a["content"]),
                disposition=a.get("disposition", "attachment"),
                content_id=a.get("content_id"),
            )
            for a in body.get("attachments", [])
        ],
    )


# --------------------------------------------------------------------------- shared requests


def template_email(email_id: str = "templated", **changes: Any) -> OutgoingEmail:
    """An email that needs a provider-side template to be rendered."""
    fields: dict[str, Any] = {
        "text": None, "html": None, "subject": None, "template_id": "d-1", "template_data": {"n": 1},
    }  # fmt: skip
    return outgoing_email(email_id, **{**fields, **changes})
