"""SendGrid's v3 Mail Send behind the ``Provider`` port: the body built here, sent streamed.

The official ``sendgrid`` client gives the request's URL and headers; the body
goes out streamed, attachments base64-encoded while read (``sendgrid_stream``),
on one pooled client that keeps its connections alive (``http_client``), which
the lookups use too.

The email id travels in ``custom_args`` (top level and in the personalization),
so SendGrid echoes it in every Event Webhook callback and the callbacks can be
matched back to the email. Outcomes follow SendGrid's status codes; network
failures are split by whether the request could have reached SendGrid.

With ``activity_lookup`` the adapter also has the optional ``lookup``
capability: SendGrid's Email Activity Feed API (a paid add-on, and its API key
needs the Email Activity scope), ``GET /v3/messages`` with the query
``unique_args['email_id']="<email id>"``, answers whether SendGrid holds a
message for an email id. SendGrid allows it 6 requests a minute.

The API key goes into the Authorization header and nowhere else: no reason,
log line or repr carries it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import sendgrid

from contracts import Address
from emailer.adapters.providers.http_client import KeptConnections
from emailer.adapters.providers.prepared import PreparedBodies
from emailer.adapters.providers.sendgrid_stream import StreamedMailSend, mail_send_body
from emailer.adapters.providers.streamed_body import StreamedBody
from handlers.ports import (
    LookupAnswer,
    MessageLookup,
    Outcome,
    OutgoingAttachment,
    OutgoingEmail,
    SendOutcome,
)

DEFAULT_BASE_URL = "https://api.sendgrid.com"
EMAIL_ID_ARG = "email_id"
"""The custom arg carrying our email id (SendGrid echoes it in callbacks and indexes it for queries)."""
MAX_REASON_CHARS = 2000
DEFAULT_POOL_SIZE = 8
DEFAULT_KEEPALIVE_EXPIRY = 4.0


class SendGridProvider:
    """Sends through SendGrid (or the sandbox: point ``base_url`` at it)."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        activity_lookup: bool = False,
        connect_timeout: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
    ) -> None:
        """``connect_timeout``: seconds to open a connection (TLS included); ``timeout``: seconds any
        one read or write may wait afterwards (SendGrid's answer); ``pool_size``: connections kept
        (the sends in flight at once); ``keepalive_expiry``: seconds an idle one is kept."""
        if not api_key:
            raise ValueError("a SendGrid API key is required")
        self._api_key = api_key
        client = sendgrid.SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/")).client
        self._connections = KeptConnections(
            read_timeout=timeout,
            connect_timeout=connect_timeout,
            size=pool_size,
            keepalive_expiry=keepalive_expiry,
        )
        self._headers: dict[str, str] = dict(client.request_headers)
        self._messages_url = f"{client.host}/v3/messages"  # the Email Activity Feed, for lookups
        self.base_url = base_url
        self.lookup: MessageLookup | None = self.find_message if activity_lookup else None
        # The request the client would send (its URL and headers), with the body streamed.
        self._mail_send = StreamedMailSend(
            self._connections, client.host, self._headers, _encoded, outcome_for_status
        )
        self._prepared: PreparedBodies[StreamedBody] = PreparedBodies()

    def __repr__(self) -> str:
        return f"SendGridProvider(base_url={self.base_url!r})"

    def prepare(self, email: OutgoingEmail) -> None:
        """Build the Mail Send body and encode it as it will be sent (strict JSON); raises if it cannot.

        Attachments are not read: their base64 is streamed in by ``send``. The body is kept for the
        ``send`` of this same email object (``prepared``): built once, not twice.
        """
        self._prepared.keep(email, mail_send_body(email, _encoded))

    def send(self, email: OutgoingEmail) -> SendOutcome:
        """Every email, whatever its size, goes with its body streamed (``sendgrid_stream``)."""
        return self._mail_send.send(email, self._redact, self._prepared.take(email))

    def find_message(self, email_id: str) -> LookupAnswer:
        """Does SendGrid hold a message for ``email_id``? (Email Activity Feed, one request.)"""
        params: dict[str, str | int] = {"query": activity_query(email_id), "limit": 1}
        try:
            with self._connections.client() as http:
                response = http.get(self._messages_url, params=params, headers=self._headers)
        except httpx.TransportError as err:
            return LookupAnswer.unavailable(
                self._redact(f"Email Activity did not answer: {type(err).__name__}")
            )
        if not response.is_success:
            return LookupAnswer.unavailable(f"Email Activity answered HTTP {response.status_code}")
        return activity_answer(response.content)

    def close(self) -> None:
        """Close the kept connections (the provider is not used afterwards)."""
        self._connections.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as JSON, refusing what JSON cannot carry (NaN, infinities) rather than sending it."""
    return json.dumps(body, allow_nan=False).encode()


def _encoded(email: OutgoingEmail) -> bytes:
    return encode_body(build_request_body(email))


def build_request_body(email: OutgoingEmail) -> dict[str, Any]:
    """The v3 Mail Send body for one email: one personalization, the email id in custom_args."""
    custom_args = {EMAIL_ID_ARG: email.email_id}
    personalization: dict[str, Any] = {"to": [_address(a) for a in email.to]}
    if email.cc:
        personalization["cc"] = [_address(a) for a in email.cc]
    if email.bcc:
        personalization["bcc"] = [_address(a) for a in email.bcc]
    personalization["custom_args"] = dict(custom_args)
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": _address(email.from_),
        "custom_args": dict(custom_args),
    }
    if email.reply_to is not None:
        body["reply_to"] = _address(email.reply_to)
    if email.subject:
        body["subject"] = email.subject
    content = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", email.text), ("text/html", email.html))
        if value
    ]
    if content:
        body["content"] = content
    if email.template_id:
        body["template_id"] = email.template_id
        if email.template_data is not None:
            body["dynamic_template_data"] = email.template_data
    if email.attachments:
        body["attachments"] = [_attachment(a) for a in email.attachments]
    if email.headers:
        body["headers"] = dict(email.headers)
    if email.categories:
        body["categories"] = list(email.categories)
    return body


def activity_query(email_id: str) -> str:
    """The Email Activity query for messages carrying our email id (SendGrid's documented syntax)."""
    if (
        '"' in email_id or "\\" in email_id
    ):  # the contract's pattern allows neither; never build a broken query
        raise ValueError(f"email id {email_id!r} cannot be put in an Email Activity query")
    return f"unique_args['{EMAIL_ID_ARG}']=\"{email_id}\""


def activity_answer(body: bytes | str | None) -> LookupAnswer:
    """``{"messages": [{"msg_id": ...}, ...]}``: held if any; the X-Message-Id is msg_id's first part."""
    try:
        messages = json.loads(body or b"")["messages"]
    except (ValueError, KeyError, TypeError):
        return LookupAnswer.unavailable("Email Activity answered something that is not its JSON")
    if not isinstance(messages, list):
        return LookupAnswer.unavailable("Email Activity answered something that is not its JSON")
    if not messages:
        return LookupAnswer(held=False)
    msg_id = messages[0].get("msg_id") if isinstance(messages[0], dict) else None
    return LookupAnswer(held=True, provider_message_id=str(msg_id).split(".", 1)[0] if msg_id else None)


def outcome_for_status(
    status: int,
    body: bytes | None,
    headers: Mapping[str, str] | None,
    redact: Callable[[str], str] = str,
) -> SendOutcome:
    """Map SendGrid's answer to the port's outcome (see ``Outcome`` for what each one means).

    ``headers`` are looked up by name whatever its case (``httpx.Headers``, as the answer has them).
    ``redact`` scrubs secrets from SendGrid's error text before it becomes a reason.
    """
    if 200 <= status < 300:
        message_id = headers.get("X-Message-Id") if headers is not None else None
        return SendOutcome.accepted(message_id, status=status)
    if status in (401, 403):
        # A wrong or revoked key (or one without the mail.send scope) is an operator's fix: the
        # provider gate stops dispatching and the email waits, never failed for it.
        reason = f"SendGrid refused the API key (HTTP {status}): check EMAILER_SENDGRID_API_KEY"
        return SendOutcome(Outcome.MISCONFIGURED, reason=reason, status=status)
    detail = redact(_error_messages(body))
    if status == 429:
        return SendOutcome(
            Outcome.TRANSIENT,
            reason=f"SendGrid rate limit (HTTP 429): {detail}",
            status=status,
            retry_after=_retry_after(headers),
        )
    if 400 <= status < 500:
        return SendOutcome(
            Outcome.REJECTED,
            reason=f"SendGrid rejected the email (HTTP {status}): {detail}",
            status=status,
        )
    return SendOutcome(
        Outcome.TRANSIENT,
        reason=f"SendGrid could not take it (HTTP {status}): {detail}",
        status=status,
        retry_after=_retry_after(headers),  # a 503 may say when to come back, too
    )


def _address(address: Address) -> dict[str, str]:
    result = {"email": str(address.email)}
    if address.name:
        result["name"] = address.name
    return result


def _attachment(attachment: OutgoingAttachment) -> dict[str, str]:
    result = {
        "content": base64.b64encode(attachment.read()).decode("ascii"),
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": attachment.disposition,
    }
    if attachment.content_id:
        result["content_id"] = attachment.content_id
    return result


def _error_messages(body: bytes | None) -> str:
    """SendGrid's ``{"errors": [{"message", "field"}]}`` as one line; raw text otherwise."""
    text = (body or b"").decode("utf-8", errors="replace")
    try:
        errors = json.loads(text)["errors"]
        parts = [f"{e['message']} ({e['field']})" if e.get("field") else str(e["message"]) for e in errors]
        summary = "; ".join(parts)
    except (ValueError, KeyError, TypeError):
        summary = text.strip() or "no details"
    return summary[:MAX_REASON_CHARS]


def _retry_after(headers: Mapping[str, str] | None) -> timedelta | None:
    """Retry-After in seconds or as an HTTP date; else SendGrid's X-RateLimit-Reset (epoch)."""
    if headers is None:
        return None
    value = (headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(when - datetime.now(UTC), timedelta(0))
    reset = (headers.get("X-RateLimit-Reset") or "").strip()
    if reset.isdigit():
        return max(datetime.fromtimestamp(int(reset), UTC) - datetime.now(UTC), timedelta(0))
    return None
