"""A client of the sandbox's control API, for tests and benchmarks running it in another process."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import httpx

POLL_INTERVAL_S = 0.02


class SandboxClient:
    """Reads what a sandbox accepted and steers how it fails, over HTTP."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        """``api_key``: the key the sandbox requires (None: it takes any ``SG.`` key, so send one)."""
        headers = {"Authorization": f"Bearer {api_key or 'SG.sandbox-control'}"}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def messages(self, email_id: str | None = None) -> list[dict[str, Any]]:
        """Accepted requests, oldest first.

        Each has ``message_id``, ``received_at``, ``body`` and ``api_key_last4``.
        """
        params = {"email_id": email_id} if email_id is not None else None
        response = self._http.get("/sandbox/messages", params=params)
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()
        return messages

    def reset(self) -> None:
        """Forget accepted requests and zero the counters (the failure mode stays)."""
        self._http.delete("/sandbox/messages").raise_for_status()

    def set_mode(
        self,
        mode: str,
        retry_after: int | None = None,
        delay: float | None = None,
        status: int | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Switch the failure mode (normal, outage, rate_limit, slow, error, reject); returns it."""
        settings = {"retry_after": retry_after, "delay": delay, "status": status, "reason": reason}
        payload = {"mode": mode, **{k: v for k, v in settings.items() if v is not None}}
        response = self._http.put("/sandbox/mode", json=payload)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def mode(self) -> dict[str, Any]:
        response = self._http.get("/sandbox/mode")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, int]:
        """``{"received": n, "accepted": n}``: every mail send seen, and those answered 202."""
        response = self._http.get("/sandbox/stats")
        response.raise_for_status()
        result: dict[str, int] = response.json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        """Every mail send as answered, oldest first: ``at`` (unix time), ``status``, ``retry_after``."""
        response = self._http.get("/sandbox/requests")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def webhook(self) -> dict[str, Any]:
        """The Event Webhook's URL, public key (SendGrid's format), mode and counters."""
        response = self._http.get("/sandbox/webhook")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_webhook_mode(self, mode: str) -> dict[str, Any]:
        """normal, duplicate (every batch twice), shuffle (events reordered), duplicate-shuffle."""
        response = self._http.put("/sandbox/webhook", json={"mode": mode})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for_messages(
        self, count: int, email_id: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll until at least ``count`` accepted requests (for ``email_id``, if given) are there.

        Raises ``TimeoutError`` saying how many arrived when ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(email_id)
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                wanted = f" for email_id={email_id!r}" if email_id is not None else ""
                raise TimeoutError(
                    f"expected {count} accepted request(s){wanted} within {timeout}s, got {len(messages)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
