"""What a provider answers when an attachment's bytes cannot be read: never a broken email.

An attachment whose blob is missing or altered fails the email for good (the
reason names the file); a blob store that does not answer is a transient
failure like a provider outage: the email waits and is tried again.
"""

from __future__ import annotations

from handlers.ports import AttachmentUnusable, BlobStoreUnavailable, Outcome, SendOutcome

BLOB_FAILURES = (AttachmentUnusable, BlobStoreUnavailable)


def outcome_for_blob_failure(exc: Exception) -> SendOutcome:
    if isinstance(exc, AttachmentUnusable):
        return SendOutcome(Outcome.REJECTED, reason=f"not sent: {exc}")
    return SendOutcome(Outcome.TRANSIENT, reason=f"not sent: the blob store is unavailable: {exc}")
