"""SendGrid's Mail Send with the body streamed: attachments base64-encoded while read from the blob store.

The body is the one ``sendgrid.build_request_body`` builds, byte for byte, but
never one string in memory. It is built with a small stand-in for each
attachment's bytes, encoded once, and split where each attachment's base64 goes
(``streamed_body``). Sending writes the JSON pieces and, between them, each
attachment's base64 as its bytes are read (through the sha256 check for a
blob), with the exact ``Content-Length`` known up front from the sizes. A 20 MB
attachment costs a few chunks of memory, not the copies (bytes, base64, JSON
string, encoded body) of building the body whole.

Every email goes this way (one path, whatever its size); the request is the one
the ``sendgrid`` client would send: its URL, its headers (the key, its
User-Agent), JSON, proxies from the environment. The client itself cannot
stream a body (``python_http_client`` hands urllib one bytes object, on a new
connection each time), so httpx sends it, on the provider's pooled client
(``http_client``: connections kept alive, lent one request at a time).

What a failure means, with a streamed body (``http_client.failure_outcome``):

- the connection cannot be made, or breaks while the body is still being
  written (or the blob store fails, or the attachment turns out altered, and
  the request is cut short): SendGrid never got a whole request -> not sent:
  TRANSIENT (REJECTED for an altered or missing blob: it will not get better);
- the whole body was written and then no status line came (timeout, reset,
  closed), on a new connection or a reused one: SendGrid may have taken it ->
  UNKNOWN, never a blind resend;
- an answer came (even early, before the body was complete): ``outcome_for_status``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace

import httpx

from emailer.adapters.providers.blob_failures import BLOB_FAILURES, outcome_for_blob_failure
from emailer.adapters.providers.http_client import Endpoint, KeptConnections, describe, failure_outcome
from emailer.adapters.providers.streamed_body import StreamedBody, stand_ins
from handlers.ports import Outcome, OutgoingEmail, SendOutcome

MAIL_SEND_PATH = "/v3/mail/send"

BodyEncoder = Callable[[OutgoingEmail], bytes]
"""The non-streamed builder: the whole JSON body of an email (``sendgrid.py``'s, passed in)."""
StatusMapper = Callable[[int, bytes | None, Mapping[str, str] | None, Callable[[str], str]], SendOutcome]
"""SendGrid's answer to an outcome (``sendgrid.outcome_for_status``, passed in)."""


def mail_send_body(email: OutgoingEmail, encode: BodyEncoder) -> StreamedBody:
    """The body ``encode`` builds, cut around each attachment's base64; reads no attachment.

    Raises what ``encode`` raises (NaN, a value JSON cannot carry).
    """
    if not email.attachments:  # nothing to stream in: the body as it is, in one piece
        return StreamedBody.around(encode(email), [], [])
    replaced, markers = stand_ins(email.attachments)
    return StreamedBody.around(encode(replace(email, attachments=replaced)), markers, email.attachments)


class StreamedMailSend:
    """Sends Mail Send requests with a streamed body (one per ``send``, any thread) on ``connections``."""

    def __init__(
        self,
        connections: KeptConnections,
        base_url: str,
        headers: Mapping[str, str],
        encode: BodyEncoder,
        outcome_for_status: StatusMapper,
    ) -> None:
        self.url = httpx.URL(f"{base_url.rstrip('/')}{MAIL_SEND_PATH}")
        self._endpoint = Endpoint.of(self.url, {**headers, "Content-Type": "application/json"})  # once
        self._connections = connections
        self._encode = encode
        self._outcome_for_status = outcome_for_status

    def send(
        self, email: OutgoingEmail, redact: Callable[[str], str] = str, body: StreamedBody | None = None
    ) -> SendOutcome:
        """``body``: the email's, already built (``mail_send_body``); else it is built here."""
        if body is None:
            try:
                body = mail_send_body(email, self._encode)
            except Exception as exc:  # noqa: BLE001 - nothing was sent: a refusal with the reason
                reason = f"cannot build the request: {type(exc).__name__}: {exc}"
                return SendOutcome(Outcome.REJECTED, reason=redact(reason))
        writing = _Written(body)
        try:
            response = self._connections.post(self._endpoint, body.length, writing.chunks())
        except BLOB_FAILURES as exc:  # raised by the body while it was written: the request was cut short
            return outcome_for_blob_failure(exc)
        except httpx.TransportError as err:
            outcome = failure_outcome(err, body_written=writing.complete)
            if outcome is Outcome.TRANSIENT:
                return SendOutcome(outcome, reason=redact(f"not sent: {describe(err)}"))
            return SendOutcome(outcome, reason=redact(f"sent, but no answer came: {describe(err)}"))
        finally:
            writing.close()
        return self._outcome_for_status(response.status_code, response.content, response.headers, redact)


class _Written:
    """The body as httpx pulls it, knowing whether every byte was handed to the socket."""

    def __init__(self, body: StreamedBody) -> None:
        self._body = body
        self._expected = body.length
        self._chunks: Generator[bytes, None, None] | None = None
        self.complete = False

    def chunks(self) -> Generator[bytes, None, None]:
        self._chunks = self._generate()
        return self._chunks

    def _generate(self) -> Generator[bytes, None, None]:
        written = 0
        chunks = self._body.chunks()
        try:
            for chunk in chunks:
                yield chunk
                # Resumed only once httpx wrote the chunk. Once the declared length is out,
                # SendGrid may hold a whole request (even if, by a bug, more were to follow).
                written += len(chunk)
                self.complete = written >= self._expected
        finally:
            chunks.close()  # the attachment being read, if the request stopped half-way

    def close(self) -> None:
        """Close the attachment streams a request left half-read (a failure mid-body)."""
        if self._chunks is not None:
            self._chunks.close()
