"""Internal commands are signed: only Emailer itself may send them.

``DispatchEmail`` and ``RecordDeliveryReports`` make Emailer call the provider
or change recipients' state. Whoever can write to the input queue can put
anything there, so these two are accepted only with a valid
``Emailer.Signature`` header: an HMAC-SHA256, keyed by ``EMAILER_INTERNAL_KEY``,
over the message id, the message type and the body (length-prefixed, so no
two different messages sign alike). The unit of work signs every command
Emailer sends itself; the webhook ingress signs the ``RecordDeliveryReports``
it publishes with the same key; the pipeline verifies (constant-time) and
sends anything else to the error queue as "forged or unsigned internal
command". Public commands (``SendEmail``, ``CancelEmail``) need no signature.

The key may list several, comma-separated: the first signs, every one
verifies (rotation: add the new key second everywhere, then move it first,
then drop the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from contracts import DispatchEmail, RecordDeliveryReports

SIGNATURE_HEADER = "Emailer.Signature"
INTERNAL_COMMANDS = frozenset(kind.type_name() for kind in (DispatchEmail, RecordDeliveryReports))
"""Type names of the commands only Emailer may send (everything else is public)."""
FORGED = "forged or unsigned internal command"
MIN_KEY_CHARS = 32
_SCHEME = "hmac-sha256="


class Signer:
    """Signs and verifies internal commands with one or more keys (the first one signs)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or not all(keys):
            raise ValueError("a signer needs at least one non-empty key")
        self._keys = tuple(keys)

    @classmethod
    def from_setting(cls, value: str) -> Signer:
        """From ``EMAILER_INTERNAL_KEY``: one key, or several comma-separated (the first signs)."""
        return cls([key.strip().encode() for key in value.split(",") if key.strip()])

    @classmethod
    def generated(cls) -> Signer:
        """A random key for this process alone."""
        return cls([secrets.token_bytes(32)])

    @classmethod
    def kept_in(cls, path: Path) -> Signer:
        """The key in ``path``, generated there (mode 0600) the first time.

        For the embedded bus: a key of this installation rather than of one
        process, so that the outbox rows a crash left behind (signed before it)
        still verify after the restart.
        """
        try:
            return cls.from_setting(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process was first: use its key
            return cls.from_setting(path.read_text(encoding="ascii"))
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(32))
        return cls.from_setting(path.read_text(encoding="ascii"))

    def sign(self, message_id: str, message_type: str, body: bytes) -> str:
        """The ``Emailer.Signature`` header value for this message."""
        return _SCHEME + _mac(self._keys[0], message_id, message_type, body)

    def verify(self, message_id: str, message_type: str, body: bytes, signature: str | None) -> bool:
        """True only if ``signature`` is this message's, under one of the keys (constant time)."""
        if not signature or not signature.startswith(_SCHEME):
            return False
        given = signature[len(_SCHEME) :].encode()
        valid = False
        for key in self._keys:  # every key is tried: the time does not say which one matched
            valid |= hmac.compare_digest(given, _mac(key, message_id, message_type, body).encode())
        return valid

    def signed_headers(
        self, headers: Mapping[str, str], message_id: str, message_type: str, body: bytes
    ) -> dict[str, str]:
        """``headers`` with this message's signature added."""
        return {**headers, SIGNATURE_HEADER: self.sign(message_id, message_type, body)}


def is_internal(message_type: str) -> bool:
    return message_type in INTERNAL_COMMANDS


def _mac(key: bytes, message_id: str, message_type: str, body: bytes) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (message_id.encode("utf-8", "surrogatepass"), message_type.encode("utf-8", "surrogatepass")):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    mac.update(body)
    return mac.hexdigest()
