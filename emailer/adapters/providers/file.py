"""The embedded default provider: each email becomes an RFC 5322 ``.eml`` file in a folder.

Nothing is delivered; the file shows what would have been. Bcc recipients are
listed in an ``X-Emailer-Bcc`` header, since there is no envelope to carry them.
Writing is atomic and idempotent: a second send of the same email id finds the
file and changes nothing. Provider templates cannot be rendered locally, so an
email that needs one is rejected with a reason.

The message is written part by part (``eml_body``): built by ``email.message``
with a small stand-in for each attachment's bytes, then streamed to the file
with each attachment's base64 lines produced while its blob is read (and
checked), the same bytes ``as_bytes`` would give with the real content.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from contracts import Address
from emailer.adapters.atomic import atomic_file
from emailer.adapters.providers.blob_failures import BLOB_FAILURES, outcome_for_blob_failure
from emailer.adapters.providers.streamed_body import StreamedBody, stand_ins
from handlers.ports import LookupAnswer, MessageLookup, Outcome, OutgoingEmail, SendOutcome

MESSAGE_ID_DOMAIN = "emailer.local"
MAX_LINE = 998


class FileProvider:
    """Writes ``<directory>/<email_id>.eml`` for every email sent."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.lookup: MessageLookup = self.find_message

    def find_message(self, email_id: str) -> LookupAnswer:
        """Held if its .eml file exists (a file is written whole or not at all)."""
        try:
            held = self.path_for(email_id).exists()
        except ValueError as exc:
            return LookupAnswer.unavailable(str(exc))
        return LookupAnswer(
            held=held, provider_message_id=f"{email_id}@{MESSAGE_ID_DOMAIN}" if held else None
        )

    def __repr__(self) -> str:
        return f"FileProvider(directory={str(self.directory)!r})"

    def prepare(self, email: OutgoingEmail) -> None:
        """Build the ``.eml`` (attachments not read) and drop it: raises what ``email.message`` raises."""
        if email.template_id:
            raise ValueError(_template_refusal(email.template_id))
        self.path_for(email.email_id)
        eml_body(email)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        message_id = f"{email.email_id}@{MESSAGE_ID_DOMAIN}"
        if email.template_id:
            return SendOutcome(Outcome.REJECTED, reason=_template_refusal(email.template_id))
        path = self.path_for(email.email_id)
        if path.exists():
            return SendOutcome.accepted(message_id, delivered=True)
        try:
            body = eml_body(email)
        except Exception as exc:  # noqa: BLE001 - nothing was written: a refusal with the reason
            reason = f"cannot build the message: {type(exc).__name__}: {exc}"
            return SendOutcome(Outcome.REJECTED, reason=reason)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_file(path) as file:
                for chunk in body.chunks():
                    file.write(chunk)
        except BLOB_FAILURES as exc:  # the temporary file is gone: no .eml, nothing half-written
            return outcome_for_blob_failure(exc)
        return SendOutcome.accepted(message_id, delivered=True)

    def path_for(self, email_id: str) -> Path:
        if not email_id or "/" in email_id or "\\" in email_id or email_id.startswith("."):
            raise ValueError(f"email id {email_id!r} cannot name a file")
        return self.directory / f"{email_id}.eml"


def _template_refusal(template_id: str) -> str:
    return (
        f"the file provider cannot render provider template {template_id!r}: "
        "send text/html content, or configure a provider that has the template"
    )


def eml_body(email: OutgoingEmail) -> StreamedBody:
    """The message's bytes cut around each attachment's base64 lines; reads no attachment."""
    replaced, markers = stand_ins(email.attachments)
    message = build_message(replace(email, attachments=replaced))
    linesep = message.policy.linesep.encode()
    # email.contentmanager's base64 lines: as many whole 4-character groups as a line may hold.
    line_bytes = (message.policy.max_line_length or MAX_LINE) // 4 * 3
    return StreamedBody.around(message.as_bytes(), markers, email.attachments, line_bytes, linesep)


def build_message(email: OutgoingEmail) -> EmailMessage:
    """The email as a MIME message: text and html as alternatives, attachments alongside."""
    message = EmailMessage(policy=_policy_for(email))
    message["From"] = _header_address(email.from_)
    message["To"] = [_header_address(a) for a in email.to]
    if email.cc:
        message["Cc"] = [_header_address(a) for a in email.cc]
    if email.reply_to is not None:
        message["Reply-To"] = _header_address(email.reply_to)
    if email.subject is not None:
        message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{email.email_id}@{MESSAGE_ID_DOMAIN}>"
    message["X-Emailer-Email-Id"] = email.email_id
    if email.bcc:
        message["X-Emailer-Bcc"] = ", ".join(str(_header_address(a)) for a in email.bcc)
    if email.categories:
        message["X-Emailer-Categories"] = ", ".join(email.categories)
    for name, value in email.headers.items():
        message[name] = value
    _set_body(message, email)
    return message


def _set_body(message: EmailMessage, email: OutgoingEmail) -> None:
    if email.text is not None or email.html is None:
        message.set_content(email.text or "")
        if email.html is not None:
            message.add_alternative(email.html, subtype="html")
    else:
        message.set_content(email.html, subtype="html")
    html_part = message.get_body(preferencelist=("html",)) if email.html is not None else None
    # Inline parts first: once an attachment made the message multipart/mixed, an html body that
    # is the message itself can no longer become multipart/related (found by the property test).
    ordered = sorted(email.attachments, key=lambda a: not (a.disposition == "inline" and a.content_id))
    for attachment in ordered:
        maintype, subtype = _split_type(attachment.content_type)
        related = attachment.disposition == "inline" and bool(attachment.content_id)
        if related and isinstance(html_part, EmailMessage):
            # Inline parts sit beside the html that refers to them (multipart/related).
            html_part.add_related(
                attachment.read(),
                maintype,
                subtype,
                disposition="inline",
                filename=attachment.filename,
                cid=_angle(attachment.content_id or ""),
            )
        else:
            message.add_attachment(
                attachment.read(),
                maintype,
                subtype,
                disposition=attachment.disposition,
                filename=attachment.filename,
                cid=_angle(attachment.content_id) if attachment.content_id else None,
            )


def _policy_for(email: OutgoingEmail) -> policy.EmailPolicy[EmailMessage]:
    # An internationalized address (non-ASCII local part) can only be written with SMTPUTF8.
    # Headers are folded only past RFC 5322's 998: Python's folder can split a long non-ASCII
    # display name inside the address that follows it (found by the property test).
    ascii_only = all(str(a.email).isascii() for a in [email.from_, *email.all_recipients()])
    return (policy.SMTP if ascii_only else policy.SMTPUTF8).clone(max_line_length=MAX_LINE)


def _header_address(address: Address) -> HeaderAddress:
    # username/domain rather than addr_spec: parsing an addr_spec raises on a non-ASCII local part
    # (NonASCIILocalPartDefect), which the contract accepts and SMTPUTF8 can carry.
    username, _, domain = str(address.email).rpartition("@")
    return HeaderAddress(display_name=address.name or "", username=username, domain=domain)


def _split_type(content_type: str) -> tuple[str, str]:
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    if not maintype or not subtype or maintype == "multipart":
        return "application", "octet-stream"
    return maintype, subtype


def _angle(content_id: str) -> str:
    return content_id if content_id.startswith("<") else f"<{content_id}>"
