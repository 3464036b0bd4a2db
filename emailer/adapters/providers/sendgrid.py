"""SendGrid's v3 Mail Send behind the ``Provider`` port: the body built here, sent streamed.

The official ``sendgrid`` client gives the request's URL and headers; the body
goes out streamed, attachments base64-encoded while read (``sendgrid_stream``).

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
import functools
import http.client
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import python_http_client
import sendgrid
from python_http_client.exceptions import HTTPError

from contracts import Address
from emailer.adapters.providers.sendgrid_stream import StreamedMailSend, mail_send_body
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
_BEARER = re.compile(r"Bearer\s+[^\s'\",}]+")


class _RedactBearer(logging.Filter):
    """python_http_client logs request headers, Authorization included, at DEBUG: mask the key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Bearer" in message:
            record.msg, record.args = _BEARER.sub("Bearer ***", message), None
        return True


def _guard_client_logger() -> None:
    client_logger = logging.getLogger("python_http_client.client")
    if not any(isinstance(f, _RedactBearer) for f in client_logger.filters):
        client_logger.addFilter(_RedactBearer())


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
    ) -> None:
        """``connect_timeout``: seconds to open the connection (TLS included); ``timeout``: seconds any
        one read or write may wait afterwards (SendGrid's answer)."""
        if not api_key:
            raise ValueError("a SendGrid API key is required")
        self._api_key = api_key
        client = sendgrid.SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/")).client
        self._messages = TimedClient(  # the Email Activity Feed, for lookups
            connect_timeout,
            host=client.host,
            version=3,
            request_headers=client.request_headers,
            url_path=["messages"],
            timeout=timeout,
        )
        self.base_url = base_url
        self.lookup: MessageLookup | None = self.find_message if activity_lookup else None
        _guard_client_logger()
        # The request the client would send (its URL and headers), with the body streamed; connect
        # apart from read and write, as TimedClient does for lookups.
        self._mail_send = StreamedMailSend(
            client.host,
            client.request_headers,
            httpx.Timeout(timeout, connect=connect_timeout),
            _encoded,
            outcome_for_status,
        )

    def __repr__(self) -> str:
        return f"SendGridProvider(base_url={self.base_url!r})"

    def prepare(self, email: OutgoingEmail) -> None:
        """Build the Mail Send body and encode it as it will be sent (strict JSON); raises if it cannot.

        Attachments are not read: their base64 is streamed in by ``send``.
        """
        mail_send_body(email, _encoded)

    def send(self, email: OutgoingEmail) -> SendOutcome:
        """Every email, whatever its size, goes with its body streamed (``sendgrid_stream``)."""
        return self._mail_send.send(email, self._redact)

    def find_message(self, email_id: str) -> LookupAnswer:
        """Does SendGrid hold a message for ``email_id``? (Email Activity Feed, one request.)"""
        params = {"query": activity_query(email_id), "limit": 1}
        try:
            response = self._messages.get(query_params=params)
        except HTTPError as err:
            return LookupAnswer.unavailable(f"Email Activity answered HTTP {err.status_code}")
        except (OSError, http.client.HTTPException) as err:
            return LookupAnswer.unavailable(
                self._redact(f"Email Activity did not answer: {type(err).__name__}")
            )
        return activity_answer(response.body)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as JSON, refusing what JSON cannot carry (NaN, infinities) rather than sending it."""
    return json.dumps(body, allow_nan=False).encode()


def _encoded(email: OutgoingEmail) -> bytes:
    return encode_body(build_request_body(email))


class TimedClient(python_http_client.Client):  # type: ignore[misc]  # the library is untyped
    """python_http_client's client with a connect timeout apart from the read timeout.

    urllib has one timeout for both (the socket's); this client opens connections
    with ``connect_timeout`` and then waits at most ``timeout`` for each read or write.
    A connect that times out raises inside urllib's request (URLError: not sent);
    a read that times out comes after the request was sent (the unknown outcome).
    """

    def __init__(self, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connect_timeout = connect_timeout

    def _make_request(self, opener: Any, request: Any, timeout: float | None = None) -> Any:
        handlers = (_TimedHttp(self.connect_timeout), _TimedHttps(self.connect_timeout))
        return super()._make_request(urllib.request.build_opener(*handlers), request, timeout)


class _ConnectTimeout:
    """Mixed into an HTTP(S) connection: connect (and TLS handshake) with its own timeout."""

    timeout: float | None
    sock: Any
    connect_timeout: float

    def connect(self) -> None:
        read_timeout = self.timeout
        self.timeout = self.connect_timeout
        try:
            super().connect()  # type: ignore[misc]
        finally:
            self.timeout = read_timeout
        self.sock.settimeout(read_timeout)


class _HttpConnection(_ConnectTimeout, http.client.HTTPConnection):
    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout


class _HttpsConnection(_ConnectTimeout, http.client.HTTPSConnection):
    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout


class _TimedHttp(urllib.request.HTTPHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HttpConnection, connect_timeout=self.connect_timeout), req)


class _TimedHttps(urllib.request.HTTPSHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_HttpsConnection, connect_timeout=self.connect_timeout)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


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
    headers: Message | None,
    redact: Callable[[str], str] = str,
) -> SendOutcome:
    """Map SendGrid's answer to the port's outcome (see ``Outcome`` for what each one means).

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


def _retry_after(headers: Message | None) -> timedelta | None:
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
