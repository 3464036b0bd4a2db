"""Attachments at acceptance and at dispatch, with fakes: limits, references checked, bytes checked,
and no message or timeline entry that carries the bytes."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from contracts import DispatchEmail, SendEmail
from emailer.adapters.providers.file import FileProvider
from emailer.domain import EmailStatus, RetryPolicy
from handlers.attachments import AttachmentLimits, EmailTooLarge, encoded_size
from handlers.dispatch_email import dispatch_email
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext, Provider
from handlers.send_email import send_email as handle_send_email
from tests.factories import PDF_BYTES, PNG_BYTES, send_email_payload
from tests.fakes import FakeBlobStore, FakeClock, FakeUnitOfWork, RecordingProvider

POLICY = RetryPolicy(jitter=0.0, first_delay=timedelta(seconds=5))
LIMITS = AttachmentLimits(inline_max_bytes=256 * 1024, max_email_bytes=30_000_000, provider="sendgrid")


def inline(data: bytes, filename: str = "a.bin", **more: Any) -> dict[str, Any]:
    return {"filename": filename, "content": base64.b64encode(data).decode(), **more}


def reference(data: bytes, filename: str = "a.bin", **more: Any) -> dict[str, Any]:
    key = hashlib.sha256(data).hexdigest()
    return {"filename": filename, "key": key, "sha256": key, "size": len(data), **more}


def accept(uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, attachments: list[Any]) -> str:
    command = SendEmail.model_validate(send_email_payload(attachments=attachments))
    with uow:
        uow.context = MessageContext("incoming-1", "SendEmail")
        handle_send_email(command, uow, blobs, clock, POLICY, LIMITS)
        uow.commit()
    return command.email_id


def dispatch(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, provider: Provider, clock: FakeClock, email_id: str
) -> None:
    dispatch_email(DispatchEmail(email_id=email_id), uow, blobs, provider, clock, POLICY)


# ------------------------------------------------------------------ acceptance


def test_inline_content_goes_to_the_store_and_the_reference_is_held(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    email_id = accept(uow, blobs, clock, [inline(PDF_BYTES, "invoice.pdf")])

    key = hashlib.sha256(PDF_BYTES).hexdigest()
    assert blobs.blobs[key] == PDF_BYTES
    assert uow.blob_refs.held == [key]
    assert uow.store.emails[email_id].attachments[0].sha256 == key


def test_inline_content_over_the_cap_per_command_is_refused(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    half = b"x" * (128 * 1024)
    with pytest.raises(InvalidMessage, match="262145 bytes of inline content; at most 262144"):
        accept(uow, blobs, clock, [inline(half, "a"), inline(half + b"y", "b")])
    assert blobs.blobs == {} and uow.store.emails == {}


def test_a_reference_to_a_stored_blob_is_accepted(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    blobs.put(PNG_BYTES)
    email_id = accept(
        uow, blobs, clock, [reference(PNG_BYTES, "logo.png", disposition="inline", content_id="logo")]
    )

    [attachment] = uow.store.emails[email_id].attachments
    assert (attachment.size, attachment.disposition, attachment.content_id) == (
        len(PNG_BYTES),
        "inline",
        "logo",
    )


def test_a_reference_to_a_missing_blob_is_refused(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    with pytest.raises(InvalidMessage, match="no blob .* in the blob store"):
        accept(uow, blobs, clock, [reference(PDF_BYTES)])


def test_a_reference_with_the_wrong_size_is_refused(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    blobs.put(PDF_BYTES)
    with pytest.raises(InvalidMessage, match="size 3 given"):
        accept(uow, blobs, clock, [{**reference(PDF_BYTES), "size": 3}])


def test_a_reference_to_an_altered_blob_is_refused(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    key = blobs.put(PDF_BYTES)
    blobs.blobs[key] = bytes(reversed(PDF_BYTES))  # same size, other bytes

    with pytest.raises(InvalidMessage, match="altered"):
        accept(uow, blobs, clock, [reference(PDF_BYTES)])
    assert uow.store.emails == {}


def test_an_email_the_provider_would_refuse_as_too_large_is_refused_with_the_limit(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    big = b"\x00" * 22_500_000  # 30,000,000 bytes in base64: at the limit
    blobs.put(big)

    with pytest.raises(EmailTooLarge, match="sendgrid takes less than 30000000 bytes"):
        accept(uow, blobs, clock, [reference(big)])
    assert uow.store.emails == {}


def test_the_encoded_size_counts_base64_bodies_and_headers() -> None:
    command = SendEmail.model_validate(send_email_payload(attachments=[reference(b"x" * 3000)]))
    bare = len(command.model_dump_json(by_alias=True, exclude={"attachments"}))

    assert bare + 4000 < encoded_size(command, [3000]) < bare + 4000 + 200
    assert encoded_size(command, [3001]) == encoded_size(command, [3000]) + 4


# ---------------------------------------------------------- references only


def test_no_message_and_no_timeline_entry_carries_the_bytes(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes inline, the most a command may carry
    provider = RecordingProvider()
    email_id = accept(uow, blobs, clock, [inline(data, "big.bin")])
    dispatch(uow, blobs, provider, clock, email_id)

    sizes = {m.message_type: len(m.body) for m in uow.store.outbox}
    assert set(sizes) == {"DispatchEmail", "EmailQueued", "EmailDeliveryStarted"}
    assert max(sizes.values()) < 2000, sizes  # references, not 341,336 bytes of base64
    queued = json.loads(next(m.body for m in uow.store.outbox if m.message_type == "EmailQueued"))
    assert queued["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "content" not in queued["attachments"][0]
    assert uow.store.timeline[email_id] == ["queued", "attempt_started", "accepted"]


# ------------------------------------------------------------------ dispatch


def test_dispatch_streams_the_checked_bytes(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    provider = RecordingProvider()
    email_id = accept(uow, blobs, clock, [inline(PDF_BYTES, "invoice.pdf")])
    dispatch(uow, blobs, provider, clock, email_id)

    [sent] = provider.sent
    assert sent.attachments[0].source is not None and sent.attachments[0].read() == PDF_BYTES


def test_a_blob_altered_after_acceptance_fails_the_email_and_sends_nothing(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, tmp_path: Any
) -> None:
    provider = FileProvider(tmp_path / "mail")
    email_id = accept(uow, blobs, clock, [inline(PDF_BYTES, "invoice.pdf")])
    key = hashlib.sha256(PDF_BYTES).hexdigest()
    blobs.blobs[key] = bytes(reversed(PDF_BYTES))

    dispatch(uow, blobs, provider, clock, email_id)

    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.FAILED
    assert (
        email.last_error is not None and "'invoice.pdf'" in email.last_error and "altered" in email.last_error
    )
    [failed] = uow.published("EmailDeliveryFailed")
    assert "altered" in json.loads(failed.body)["reason"]
    assert not (tmp_path / "mail").exists() or list((tmp_path / "mail").iterdir()) == []


def test_a_blob_missing_at_dispatch_fails_the_email_with_the_reason(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock
) -> None:
    provider = RecordingProvider()
    email_id = accept(uow, blobs, clock, [inline(PDF_BYTES, "invoice.pdf")])
    blobs.blobs.clear()

    dispatch(uow, blobs, provider, clock, email_id)

    assert provider.sent == []
    [failed] = uow.published("EmailDeliveryFailed")
    assert "'invoice.pdf'" in json.loads(failed.body)["reason"]
    assert "not in the blob store" in json.loads(failed.body)["reason"]


def test_a_blob_store_down_while_sending_is_a_transient_failure(
    uow: FakeUnitOfWork, blobs: FakeBlobStore, clock: FakeClock, tmp_path: Any
) -> None:
    email_id = accept(uow, blobs, clock, [inline(PDF_BYTES, "invoice.pdf")])

    class DownWhileSending(FileProvider):
        def send(self, email):  # type: ignore[no-untyped-def]
            blobs.unavailable = True
            try:
                return super().send(email)
            finally:
                blobs.unavailable = False

    dispatch(uow, blobs, DownWhileSending(tmp_path / "mail"), clock, email_id)

    email = uow.store.emails[email_id]
    assert email.status is EmailStatus.QUEUED and "blob store is unavailable" in (email.last_error or "")
    assert uow.published("EmailDeliveryFailed") == []
