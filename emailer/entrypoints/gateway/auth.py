"""API tokens for the gateway: who may send, who may read.

``EMAILER_API_TOKENS`` holds one or more entries, comma-separated: ``TOKEN``
(every scope), ``send:TOKEN`` or ``read:TOKEN``. A token may be stored as
``sha256:<hex digest of the token>`` so the clear token never sits in a
configuration file. Requests present ``Authorization: Bearer TOKEN``; the
comparison is constant-time against every configured digest.

Without tokens the gateway is open, which it allows only on a loopback address
unless ``EMAILER_GATEWAY_ALLOW_ANONYMOUS=true`` says otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

SCOPES = ("send", "read")


@dataclass(frozen=True)
class Token:
    scopes: frozenset[str]
    digest: bytes


class TokenError(ValueError):
    """``EMAILER_API_TOKENS`` cannot be read; the message says which entry."""


def parse_tokens(raw: str | None) -> list[Token]:
    tokens = []
    for position, entry in enumerate((raw or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        scope, _, token = entry.partition(":") if entry.startswith(("send:", "read:")) else ("", "", entry)
        if token.startswith("sha256:"):
            hexdigest = token.removeprefix("sha256:")
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise TokenError(f"EMAILER_API_TOKENS entry {position}: 'sha256:' needs 64 hex digits")
        elif len(token) < 16:
            raise TokenError(f"EMAILER_API_TOKENS entry {position}: a token needs at least 16 characters")
        else:
            digest = hashlib.sha256(token.encode()).digest()
        tokens.append(Token(frozenset([scope]) if scope else frozenset(SCOPES), digest))
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tokens: list[Token], allow_anonymous: bool) -> None:
    """Refuse to serve a non-loopback address with no tokens, unless explicitly allowed."""
    if tokens or allow_anonymous or is_loopback(host):
        return
    raise TokenError(
        f"the gateway would listen on {host} with no API tokens: set EMAILER_API_TOKENS "
        "(or EMAILER_GATEWAY_ALLOW_ANONYMOUS=true to serve it open on purpose)"
    )


class TokenCheck:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def allows(self, authorization: str | None, scope: str) -> bool:
        if not self.tokens:
            return True
        kind, _, presented = (authorization or "").partition(" ")
        if kind.lower() != "bearer" or not presented:
            return False
        digest = hashlib.sha256(presented.strip().encode()).digest()
        allowed = False
        for token in self.tokens:  # no early exit: the time taken does not depend on which matched
            allowed |= hmac.compare_digest(digest, token.digest) and scope in token.scopes
        return allowed

    def require(self, scope: str) -> Callable[[Request], None]:
        def dependency(request: Request) -> None:
            if not self.allows(request.headers.get("authorization"), scope):
                raise HTTPException(
                    401,
                    detail=f"a valid API token with the '{scope}' scope is required (Authorization: Bearer)",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        return dependency
