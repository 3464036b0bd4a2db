"""Signing SendGrid-style webhook batches in tests: a P-256 key pair, its public key as SendGrid shows it."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from emailer.adapters.webhooks.sendgrid_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER


@dataclass
class Signer:
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def new(cls) -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> str:
        """Base64 DER (SubjectPublicKeyInfo), as SendGrid's settings page shows the verification key."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def signature(self, timestamp: str, body: bytes) -> str:
        signed = self.private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signed).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {
            SIGNATURE_HEADER: self.signature(stamp, body),
            TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        }


def sg_event(event: str, email: str, email_id: str | None = "order-42", **fields: Any) -> dict[str, Any]:
    """One event as SendGrid posts it: custom args flattened in, ``sg_event_id``, unix ``timestamp``."""
    body: dict[str, Any] = {
        "email": email,
        "event": event,
        "timestamp": fields.pop("timestamp", int(time.time())),
        "sg_event_id": fields.pop("sg_event_id", uuid.uuid4().hex),
        "sg_message_id": fields.pop("sg_message_id", "abc123.filter0001.1.0"),
        "smtp-id": "<abc123@example.com>",
        **fields,
    }
    if email_id is not None:
        body["email_id"] = email_id
    return body


def encode(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()
