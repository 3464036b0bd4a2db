"""The sandbox's Event Webhook: signed batches of events posted to a URL, the way SendGrid does.

Events wait in a buffer and go out as one JSON array when the batch is full
(``max_events`` or ``max_bytes``) or its oldest event has waited
``batch_interval`` seconds. Each post is signed as SendGrid signs: ECDSA P-256
/ SHA-256 over the timestamp header value followed by the body, base64 DER, in
``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``. A batch answered
with anything but 2xx (or not answered) is posted again after
``retry_interval`` (doubling, at most ``max_retry_interval``) until
``retry_for`` has passed, as SendGrid retries for 24 hours.

The key pair is generated at start unless a private key is given; the public
key is shown as SendGrid shows it (base64 DER), for the receiver's settings.
Modes (on request): ``duplicate`` posts every batch twice, ``shuffle`` posts a
batch's events in a random order, ``duplicate-shuffle`` does both.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class WebhookMode(StrEnum):
    NORMAL = "normal"
    DUPLICATE = "duplicate"
    SHUFFLE = "shuffle"
    DUPLICATE_SHUFFLE = "duplicate-shuffle"


@dataclass(frozen=True)
class WebhookOptions:
    url: str
    private_key: str | None = None
    """PEM or base64 DER (PKCS#8) of a P-256 key; None: a new key pair at start."""
    mode: WebhookMode = WebhookMode.NORMAL
    batch_interval: float = 1.0
    max_events: int = 1000
    max_bytes: int = 768 * 1024
    retry_interval: float = 1.0
    max_retry_interval: float = 30.0
    retry_for: float = 24 * 3600.0
    timeout: float = 10.0


class WebhookKeys:
    """The sandbox's signing key and its public half in SendGrid's format."""

    def __init__(self, private_key: str | None = None) -> None:
        self._key = _load_private_key(private_key) if private_key else ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        return base64.b64encode(self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API (sandbox)",
            SIGNATURE_HEADER: self.sign(stamp, body),
            TIMESTAMP_HEADER: stamp,
        }


def _load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    data = text.strip().encode()
    key = (
        serialization.load_pem_private_key(data, password=None)
        if data.startswith(b"-----")
        else serialization.load_der_private_key(base64.b64decode(data), password=None)
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the webhook signing key must be an ECDSA P-256 private key")
    return key


@dataclass
class _Batch:
    events: list[dict[str, Any]]
    first_try: float
    attempts: int = 0
    next_try: float = 0.0


@dataclass
class WebhookSender:
    """Buffers events, posts them in signed batches on its own thread, retries refused batches."""

    options: WebhookOptions
    keys: WebhookKeys = field(init=False)
    mode: WebhookMode = field(init=False)
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False)
    _buffer: list[dict[str, Any]] = field(default_factory=list, init=False)
    _buffer_bytes: int = field(default=0, init=False)
    _oldest: float | None = field(default=None, init=False)
    _retrying: list[_Batch] = field(default_factory=list, init=False)
    _stats: dict[str, int] = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.keys = WebhookKeys(self.options.private_key)
        self.mode = self.options.mode
        self._stats = {"events": 0, "posts": 0, "accepted_posts": 0, "refused_posts": 0, "dropped_batches": 0}

    # -- driving ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-webhook", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def add(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            for event in events:
                self._buffer.append(event)
                self._buffer_bytes += len(json.dumps(event)) + 1
            if self._oldest is None and self._buffer:
                self._oldest = time.monotonic()
            self._stats["events"] += len(events)
            self._lock.notify_all()

    def set_mode(self, mode: WebhookMode | str) -> None:
        with self._lock:
            self.mode = WebhookMode(mode)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._stats,
                "pending_events": len(self._buffer),
                "retrying_batches": len(self._retrying),
                "mode": self.mode.value,
                "url": self.options.url,
                "public_key": self.keys.public_key,
            }

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        with httpx.Client(timeout=self.options.timeout) as client:
            while not self._stop.is_set():
                batches = self._due_batches()
                for batch in batches:
                    self._post(client, batch)

    def _due_batches(self) -> list[_Batch]:
        """Wait until a batch is full, old enough, or due for a retry; take those."""
        o = self.options
        with self._lock:
            while not self._stop.is_set():
                now = time.monotonic()
                due = [b for b in self._retrying if b.next_try <= now]
                full = len(self._buffer) >= o.max_events or self._buffer_bytes >= o.max_bytes
                old = self._oldest is not None and now - self._oldest >= o.batch_interval
                if full or old:
                    due.append(self._take_batch(now))
                if due:
                    self._retrying = [b for b in self._retrying if b not in due]
                    return due
                waits = [b.next_try - now for b in self._retrying]
                if self._oldest is not None:
                    waits.append(self._oldest + o.batch_interval - now)
                self._lock.wait(timeout=max(0.005, min(waits, default=1.0)))
        return []

    def _take_batch(self, now: float) -> _Batch:
        taken: list[dict[str, Any]] = []
        size = 0
        while self._buffer and len(taken) < self.options.max_events:
            event_size = len(json.dumps(self._buffer[0])) + 1
            if taken and size + event_size > self.options.max_bytes:
                break
            taken.append(self._buffer.pop(0))
            size += event_size
        self._buffer_bytes = sum(len(json.dumps(e)) + 1 for e in self._buffer)
        self._oldest = now if self._buffer else None
        return _Batch(taken, first_try=now)

    def _post(self, client: httpx.Client, batch: _Batch) -> None:
        mode = self.mode
        events = list(batch.events)
        if mode in (WebhookMode.SHUFFLE, WebhookMode.DUPLICATE_SHUFFLE):
            random.shuffle(events)
        copies = 2 if mode in (WebhookMode.DUPLICATE, WebhookMode.DUPLICATE_SHUFFLE) else 1
        ok = all(self._post_once(client, events) for _ in range(copies))
        if ok:
            return
        batch.attempts += 1
        now = time.monotonic()
        with self._lock:
            if now - batch.first_try > self.options.retry_for:
                self._stats["dropped_batches"] += 1
                return
            wait = min(
                self.options.retry_interval * 2 ** (batch.attempts - 1), self.options.max_retry_interval
            )
            batch.next_try = now + wait
            self._retrying.append(batch)

    def _post_once(self, client: httpx.Client, events: list[dict[str, Any]]) -> bool:
        body = json.dumps(events).encode()
        try:
            response = client.post(self.options.url, content=body, headers=self.keys.headers(body))
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError:
            ok = False
        with self._lock:
            self._stats["posts"] += 1
            self._stats["accepted_posts" if ok else "refused_posts"] += 1
        return ok
