"""What the sandbox remembers: the requests it accepted, its counters, and how it is told to fail.

One ``SandboxState`` is shared by the HTTP handlers (the event loop and its
thread pool) and by whoever drives the sandbox, so every access takes its lock.
The API key of a request is never kept, only its last four characters.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

DEFAULT_MAX_MESSAGES = 100_000


class Mode(StrEnum):
    """How the sandbox answers ``POST /v3/mail/send`` once the API key is checked."""

    NORMAL = "normal"
    OUTAGE = "outage"
    """Every send answers 503."""
    RATE_LIMIT = "rate_limit"
    """Every send answers 429 with ``Retry-After: retry_after``."""
    SLOW = "slow"
    """Every send waits ``delay`` seconds, then is handled normally (and may be accepted)."""
    ERROR = "error"
    """Every send answers ``status`` (a 5xx)."""
    REJECT = "reject"
    """Every send answers 400 with ``reason`` as SendGrid words a refused request (a permanent failure)."""


@dataclass(frozen=True)
class FailureMode:
    mode: Mode = Mode.NORMAL
    retry_after: int = 60
    delay: float = 0.0
    status: int = 500
    reason: str = "The sandbox was told to reject every send."

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AcceptedRequest:
    """One accepted mail send, as the control API shows it."""

    message_id: str
    received_at: datetime
    body: dict[str, Any]
    api_key_last4: str

    def email_ids(self) -> set[str]:
        """Every ``custom_args.email_id`` of the body, global or per personalization."""
        containers: list[Any] = [self.body, *self.body.get("personalizations", [])]
        return {
            args["email_id"]
            for container in containers
            if isinstance(container, dict)
            and isinstance(args := container.get("custom_args"), dict)
            and isinstance(args.get("email_id"), str)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "received_at": self.received_at.isoformat(),
            "body": self.body,
            "api_key_last4": self.api_key_last4,
        }


def new_message_id() -> str:
    """A random 22-character id, shaped like SendGrid's ``X-Message-Id``."""
    return secrets.token_urlsafe(16)


@dataclass
class SandboxState:
    """Thread-safe memory of one sandbox.

    ``webhook_url`` is where the sandbox's ``WebhookSender`` posts SendGrid's
    signed Event Webhook batches for accepted requests (None: it posts none).
    """

    webhook_url: str | None = None
    max_messages: int = DEFAULT_MAX_MESSAGES
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _accepted: deque[AcceptedRequest] = field(init=False, repr=False)
    _failure: FailureMode = field(default_factory=FailureMode, init=False)
    _received: int = field(default=0, init=False)
    _accepted_count: int = field(default=0, init=False)
    _answers: deque[dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Oldest requests are forgotten past max_messages; the counters keep counting.
        self._accepted = deque(maxlen=self.max_messages)
        self._answers = deque(maxlen=self.max_messages)

    def record_received(self) -> None:
        with self._lock:
            self._received += 1

    def record_answer(self, received_at: float, status: int, retry_after: int | None = None) -> None:
        """One mail send as it was answered: when it arrived (unix time), the status, any Retry-After."""
        with self._lock:
            self._answers.append({"at": received_at, "status": status, "retry_after": retry_after})

    def answers(self) -> list[dict[str, Any]]:
        """Every mail send answered, oldest first (to check that nobody came back before a Retry-After)."""
        with self._lock:
            return list(self._answers)

    def record_accepted(self, body: dict[str, Any], api_key: str) -> AcceptedRequest:
        request = AcceptedRequest(
            message_id=new_message_id(),
            received_at=datetime.now(UTC),
            body=body,
            api_key_last4=api_key[-4:],
        )
        with self._lock:
            self._accepted.append(request)
            self._accepted_count += 1
        return request

    def messages(self, email_id: str | None = None) -> list[AcceptedRequest]:
        with self._lock:
            accepted = list(self._accepted)
        if email_id is None:
            return accepted
        return [request for request in accepted if email_id in request.email_ids()]

    def reset(self) -> None:
        """Forget accepted requests and zero the counters; the failure mode stays."""
        with self._lock:
            self._accepted.clear()
            self._answers.clear()
            self._received = 0
            self._accepted_count = 0

    @property
    def failure(self) -> FailureMode:
        with self._lock:
            return self._failure

    def set_failure(self, failure: FailureMode) -> None:
        with self._lock:
            self._failure = failure

    def set_mode(self, mode: Mode | str, **settings: Any) -> FailureMode:
        """Switch mode; settings not given (``retry_after``, ``delay``, ``status``) are defaults."""
        failure = FailureMode(mode=Mode(mode), **settings)
        self.set_failure(failure)
        return failure

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"received": self._received, "accepted": self._accepted_count}
