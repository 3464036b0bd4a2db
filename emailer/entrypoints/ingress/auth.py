"""Optional HTTP basic auth in front of the webhook: a second layer beside the signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


class BasicAuth:
    """``user:password`` as configured; None means no basic auth is asked for."""

    def __init__(self, credentials: str | None) -> None:
        if credentials is not None and ":" not in credentials:
            raise ValueError("EMAILER_INGRESS_BASIC_AUTH must be 'user:password'")
        # Compare digests: equal length, so compare_digest's time does not depend on the input's length.
        self._expected = hashlib.sha256(credentials.encode()).digest() if credentials else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | None) -> bool:
        if self._expected is None:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)
