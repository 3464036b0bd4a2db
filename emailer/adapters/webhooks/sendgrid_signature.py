"""SendGrid's signed Event Webhook: ECDSA P-256 / SHA-256 over the timestamp header value + the raw body.

SendGrid shows the verification key as base64 of its DER SubjectPublicKeyInfo;
several may be configured at once (key rotation): a request signed by any of
them passes. The signature header is base64 of a DER-encoded ECDSA signature,
what ``sendgrid.helpers.eventwebhook`` verifies. A timestamp further from now
than the tolerance, either way, is refused as a replay.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
DEFAULT_TOLERANCE = timedelta(minutes=5)


class SignatureRejected(Exception):
    """The request is not SendGrid's (or is a replay); the message says why, without the data."""


class InvalidPublicKey(ValueError):
    """A configured key is not a base64 DER P-256 public key."""


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A key as SendGrid shows it (base64 DER; PEM armour and whitespace are tolerated)."""
    body = "".join(
        line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("-----")
    )
    try:
        key = load_der_public_key(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidPublicKey("not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidPublicKey("not an ECDSA P-256 public key (SendGrid's Event Webhook uses P-256)")
    return key


def parse_public_keys(setting: str | None) -> list[ec.EllipticCurvePublicKey]:
    """Keys separated by commas or whitespace (base64 has neither)."""
    return [load_public_key(part) for part in (setting or "").replace(",", " ").split()]


class SignatureVerifier:
    """Checks one request against the configured keys and the timestamp tolerance."""

    def __init__(
        self, keys: Sequence[ec.EllipticCurvePublicKey], tolerance: timedelta = DEFAULT_TOLERANCE
    ) -> None:
        self.keys = list(keys)
        self.tolerance = tolerance

    def verify(self, body: bytes, signature: str | None, timestamp: str | None, now: datetime) -> None:
        """Return if ``body`` is signed by one of the keys at an acceptable time; else raise."""
        if not signature or not timestamp:
            raise SignatureRejected("the request is not signed (no signature or timestamp header)")
        if not self.keys:
            raise SignatureRejected("no verification key is configured")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureRejected("the signature is not base64") from None
        signed = timestamp.encode() + body
        if not any(_verifies(key, der, signed) for key in self.keys):
            raise SignatureRejected("the signature does not match the body and timestamp")
        self._check_fresh(timestamp, now)

    def _check_fresh(self, timestamp: str, now: datetime) -> None:
        try:
            sent = int(timestamp.strip())
        except ValueError:
            raise SignatureRejected("the timestamp is not unix seconds") from None
        skew, limit = abs(now.timestamp() - sent), self.tolerance.total_seconds()
        if skew > limit:
            raise SignatureRejected(
                f"the timestamp is {int(skew)} s from now (more than {int(limit)} s): refused as a replay"
            )


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
