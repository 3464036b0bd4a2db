"""Attachments at acceptance: the limits a SendEmail must keep, and its attachments into the blob store.

Three ways to attach end in the same reference (key = sha256, size): an upload
through ``POST /v1/attachments``, the claim-check helper other services use
(``emailer_client.claim_check``, in the client package under clients/python), or
small inline content, which is moved to the blob store here, before the commit.
What is checked when the command arrives, so that nothing the provider would refuse is ever accepted:

- inline content in all at most ``inline_max_bytes`` (decoded);
- every reference names a blob that exists, with the size given and bytes that
  hash to its sha256 (read through the check, bounded memory);
- the whole email, encoded as the provider gets it (attachments in base64,
  bodies, headers), below the provider's ``max_email_bytes``.

``hold`` locks the blobs' reference rows first, so a purge running at the same
moment cannot delete what this email is about to need.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from contracts import Attachment as IncomingAttachment
from contracts import SendEmail
from contracts.values import INLINE_CONTENT_DEFAULT_MAX_BYTES
from emailer.domain import Attachment
from handlers.claim_check import verify_blob
from handlers.errors import InvalidMessage
from handlers.ports import AttachmentUnusable, BlobReferences, BlobStore

ATTACHMENT_OVERHEAD_BYTES = 100
"""JSON around one attachment's base64 in a provider request (keys, quotes, type, disposition)."""


class EmailTooLarge(InvalidMessage):
    """The email, encoded for the provider, is larger than the provider takes (HTTP 413)."""


@dataclass(frozen=True)
class AttachmentLimits:
    inline_max_bytes: int = INLINE_CONTENT_DEFAULT_MAX_BYTES
    max_email_bytes: int | None = None
    """The provider's limit on one encoded email (SendGrid: 30 MB, base64 included); None: no limit."""
    provider: str = "the provider"


DEFAULT_LIMITS = AttachmentLimits()


def accept_attachments(
    command: SendEmail, blobs: BlobStore, refs: BlobReferences | None, limits: AttachmentLimits
) -> list[Attachment]:
    """The command's attachments as stored references, or ``InvalidMessage`` saying what is wrong."""
    if not command.attachments:
        check_encoded_size(command, [], limits)
        return []
    check_inline_total(command.attachments, limits)
    keys = [_key_of(a) for a in command.attachments]
    if refs is not None:
        refs.hold(keys)
    sizes = [_size_of(a, key, blobs) for a, key in zip(command.attachments, keys, strict=True)]
    check_encoded_size(command, sizes, limits)
    return [
        _store(a, key, size, blobs) for a, key, size in zip(command.attachments, keys, sizes, strict=True)
    ]


def check_inline_total(attachments: Sequence[IncomingAttachment], limits: AttachmentLimits) -> None:
    inline = sum(len(a.content) for a in attachments if a.content is not None)
    if inline > limits.inline_max_bytes:
        raise InvalidMessage(
            f"attachments: {inline} bytes of inline content; at most {limits.inline_max_bytes} may travel "
            "inside a SendEmail (upload larger files with POST /v1/attachments or the claim-check helper "
            "and send the reference)"
        )


def encoded_size(command: SendEmail, attachment_sizes: Sequence[int]) -> int:
    """Bytes of the email as the provider gets it: the command without attachment bytes, plus each
    attachment in base64 with the JSON around it."""
    bare = len(command.model_dump_json(by_alias=True, exclude={"attachments"}).encode())
    total = bare
    for attachment, size in zip(command.attachments, attachment_sizes, strict=True):
        meta = json.dumps([attachment.filename, attachment.content_type, attachment.content_id or ""])
        total += base64_length(size) + len(meta.encode()) + ATTACHMENT_OVERHEAD_BYTES
    return total


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def check_encoded_size(command: SendEmail, sizes: Sequence[int], limits: AttachmentLimits) -> None:
    if limits.max_email_bytes is None:
        return
    size = encoded_size(command, sizes)
    if size >= limits.max_email_bytes:
        raise EmailTooLarge(
            f"the email is {size} bytes encoded (attachments in base64, bodies and headers); "
            f"{limits.provider} takes less than {limits.max_email_bytes} bytes"
        )


def _key_of(attachment: IncomingAttachment) -> str:
    if attachment.content is not None:
        return hashlib.sha256(attachment.content).hexdigest()
    assert attachment.sha256 is not None  # the contract guarantees one of the two
    return attachment.sha256


def reference(attachment: IncomingAttachment, key: str | None = None, size: int | None = None) -> Attachment:
    """The claim check for ``attachment``: the domain's reference, by its bytes' sha256 (no I/O).

    ``key`` and ``size`` default to what the command itself says (inline bytes hashed and
    counted; a reference as given).
    """
    if size is None:
        size = len(attachment.content) if attachment.content is not None else attachment.size or 0
    return Attachment(
        filename=attachment.filename,
        content_type=attachment.content_type,
        disposition=attachment.disposition,
        content_id=attachment.content_id,
        sha256=key or _key_of(attachment),
        size=size,
    )


def _size_of(attachment: IncomingAttachment, key: str, blobs: BlobStore) -> int:
    if attachment.content is not None:
        return len(attachment.content)
    found = blobs.size(key)
    if found is None:
        raise InvalidMessage(f"attachment {attachment.filename!r}: no blob {key} in the blob store")
    if attachment.size is not None and attachment.size != found:
        raise InvalidMessage(
            f"attachment {attachment.filename!r}: size {attachment.size} given, blob {key} has {found}"
        )
    return found


def _store(attachment: IncomingAttachment, key: str, size: int, blobs: BlobStore) -> Attachment:
    if attachment.content is not None:
        blobs.put(attachment.content, attachment.content_type)
    else:
        try:
            verify_blob(blobs, key, size, attachment.filename)
        except AttachmentUnusable as exc:
            raise InvalidMessage(str(exc)) from None
    return reference(attachment, key, size)


def claim_checked(command: SendEmail, blobs: BlobStore, limits: AttachmentLimits) -> SendEmail:
    """The command as the HTTP gateway forwards it to the broker: inline bytes moved to the blob store
    (the message carries references only), references checked, the size limit kept.

    The worker checks everything again when it accepts the command (under the blob locks).
    """
    accepted = accept_attachments(command, blobs, None, limits)
    if not any(a.content is not None for a in command.attachments):
        return command
    references = [
        IncomingAttachment(
            filename=a.filename,
            content_type=a.content_type,
            disposition=a.disposition,
            content_id=a.content_id,
            sha256=a.sha256,
            size=a.size,
            key=a.sha256,
        )  # fmt: skip
        for a in accepted
    ]
    return command.model_copy(update={"attachments": references})
