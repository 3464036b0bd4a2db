"""What ``emailer send`` and ``emailer status`` do: build a SendEmail, submit it, read a status."""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts import CancelEmail, SendEmail
from emailer.config import Settings


def build_command(
    sender: str,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    subject: str,
    text: str | None,
    text_file: Path | None,
    html: str | None,
    html_file: Path | None,
    attach: list[Path],
    email_id: str | None,
    upload: Callable[[Path], dict[str, Any]] | None = None,
) -> SendEmail:
    """A SendEmail from command-line values; ValueError says what is wrong.

    Each ``--attach`` file is handed to ``upload`` (to the blob store, through the
    gateway or straight), and the command carries the reference it answers.
    """
    if text_file is not None:
        text = text_file.read_text()
    if html_file is not None:
        html = html_file.read_text()
    for path in attach:
        if not path.is_file():
            raise ValueError(f"--attach {path}: no such file")
    raw: dict[str, Any] = {
        "email_id": email_id or f"cli-{uuid.uuid4().hex}",
        "from": {"email": sender},
        "to": [{"email": a} for a in to],
        "cc": [{"email": a} for a in cc],
        "bcc": [{"email": a} for a in bcc],
        "subject": subject,
        "text": text,
        "html": html,
        "attachments": [upload(path) for path in attach] if upload is not None else [],
    }
    try:
        return SendEmail.model_validate(raw)
    except ValidationError as exc:
        from emailer.endpoint.codec import describe

        raise ValueError(describe(exc)) from None


def uploader(settings: Settings, gateway_url: str | None) -> Callable[[Path], dict[str, Any]]:
    """Where ``--attach`` files go: POST /v1/attachments on the gateway the command goes to, or
    straight into the configured blob store when the command goes onto the bus."""
    if gateway_url is None and not settings.embedded_bus:

        def to_store(path: Path) -> dict[str, Any]:
            from emailer.bootstrap import build_blob_store

            with path.open("rb") as file:
                stored = build_blob_store(settings).put_stream(file, _content_type(path))
            return _reference(path, stored.key, stored.size)

        return to_store

    def to_gateway(path: Path) -> dict[str, Any]:
        import httpx

        base = gateway_base(settings, gateway_url)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        if settings.api_token is not None:
            headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
        params = {"filename": path.name, "content_type": _content_type(path)}
        try:
            with path.open("rb") as file:
                response = httpx.post(
                    f"{base}/v1/attachments", content=_chunks(file), params=params, headers=headers,
                    timeout=120,
                )  # fmt: skip
        except httpx.HTTPError as exc:
            raise RuntimeError(
                f"cannot reach the gateway at {base}: {exc} (is `emailer run` running?)"
            ) from None
        if response.status_code != 201:
            raise RuntimeError(f"--attach {path}: gateway answered {response.status_code}: {response.text}")
        reference: dict[str, Any] = response.json()
        return reference

    return to_gateway


def _chunks(file: Any, size: int = 256 * 1024) -> Iterator[bytes]:
    while chunk := file.read(size):
        yield chunk


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _reference(path: Path, key: str, size: int) -> dict[str, Any]:
    return {
        "filename": path.name,
        "content_type": _content_type(path),
        "key": key,
        "sha256": key,
        "size": size,
    }


def gateway_base(settings: Settings, explicit: str | None) -> str:
    return (
        explicit or settings.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    ).rstrip("/")


def auth_headers(settings: Settings) -> dict[str, str]:
    """``Authorization: Bearer`` with ``EMAILER_API_TOKEN`` when it is set."""
    if settings.api_token is None or not settings.api_token.get_secret_value():
        return {}
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


def refused(settings: Settings) -> str:
    """What to say when the gateway answered 401."""
    if settings.api_token is None:
        return "the gateway requires an API token: set EMAILER_API_TOKEN"
    return "the gateway refused the API token: set EMAILER_API_TOKEN to a token it accepts"


def submit(command: SendEmail, settings: Settings, gateway_url: str | None) -> str:
    """Through the gateway (default), or onto the bus if a broker is configured and no URL given."""
    if gateway_url is None and not settings.embedded_bus:
        return _submit_to_bus(command, settings)
    import httpx

    base = gateway_base(settings, gateway_url)
    try:
        response = httpx.post(
            f"{base}/v1/emails",
            content=command.model_dump_json(by_alias=True),
            headers={"Content-Type": "application/json", **auth_headers(settings)},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the gateway at {base}: {exc} (is `emailer run` running?)") from None
    if response.status_code == 401:
        raise RuntimeError(refused(settings))
    if response.status_code != 202:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text}")
    return f"status: {base}{response.headers.get('Location', '')}"


class CancelTooLate(RuntimeError):
    """The email had gone too far to be cancelled; the message says its state."""


def cancel(email_id: str, settings: Settings, gateway_url: str | None) -> str:
    """Cancel through the gateway (it answers whether it took effect), or as a CancelEmail on the bus.

    Raises ``CancelTooLate`` when it came too late, LookupError for an unknown email.
    """
    if gateway_url is None and not settings.embedded_bus:
        where = _submit_to_bus(CancelEmail(email_id=email_id), settings)
        return f"cancel requested ({where}); `emailer status {email_id}` shows whether it took effect"
    import httpx

    base = gateway_base(settings, gateway_url)
    try:
        response = httpx.delete(f"{base}/v1/emails/{email_id}", headers=auth_headers(settings), timeout=30)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the gateway at {base}: {exc} (is `emailer run` running?)") from None
    if response.status_code == 200:
        return "cancelled"
    if response.status_code == 409:
        raise CancelTooLate(f"too late: the email is {response.json().get('status')}")
    if response.status_code == 404:
        raise LookupError(f"no email {email_id!r}")
    if response.status_code == 401:
        raise RuntimeError(refused(settings))
    raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:500]}")


def _submit_to_bus(command: SendEmail | CancelEmail, settings: Settings) -> str:
    from emailer.bootstrap import build_bus
    from handlers.ports import MessageContext
    from handlers.unit_of_work import outgoing

    bus = build_bus(settings)
    bus.connect()
    try:
        message_id = str(uuid.uuid4())
        m = outgoing(
            command,
            MessageContext.originating("Cli"),
            message_id=message_id,
            now=datetime.now(UTC),
            destination=settings.input_queue,
        )
        bus.publish([m])
    finally:
        bus.close()
    return f"on queue {settings.input_queue!r} at {bus.safe_url}"


def fetch_status(
    email_id: str, settings: Settings, gateway_url: str | None, from_db: bool
) -> dict[str, Any] | None:
    if from_db:
        from emailer.adapters.persistence.engine import make_engine
        from emailer.adapters.persistence.queries import email_view

        return email_view(make_engine(settings.effective_database_url), email_id)
    import httpx

    base = gateway_base(settings, gateway_url)
    try:
        response = httpx.get(f"{base}/v1/emails/{email_id}", headers=auth_headers(settings), timeout=10)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the gateway at {base}: {exc} (or use --from-db)") from None
    if response.status_code == 404:
        return None
    if response.status_code == 401:
        raise RuntimeError(refused(settings))
    if response.status_code != 200:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:500]}")
    result: dict[str, Any] = response.json()
    return result


def render_status(view: dict[str, Any]) -> str:
    lines = [
        f"email {view['email_id']}: {view['status'].upper()}",
        f"  subject   {view.get('subject')}",
        f"  attempts  {view['attempts']}"
        + (f"  (last error: {view['last_error']})" if view.get("last_error") else ""),
    ]
    if view.get("next_attempt_at"):
        lines.append(f"  next      {view['next_attempt_at']}")
    if view.get("provider_message_id"):
        lines.append(f"  provider  {view['provider']} {view['provider_message_id']}")
    lines.append("recipients")
    for r in view["recipients"]:
        reason = f" ({r['reason']})" if r.get("reason") else ""
        lines.append(f"  {r['kind']:<4} {r['address']:<40} {r['status']}{reason}")
    if view.get("attachments"):
        lines.append("attachments")
        for a in view["attachments"]:
            purged = f", purged {a['purged_at']}" if a.get("purged_at") else ""
            lines.append(f"  {a['filename']} ({a['content_type']}, {a['size']} bytes{purged})")
    lines.append("timeline")
    for step in view["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in step.items() if k not in ("at", "kind") and v is not None)
        lines.append(f"  {step['at']}  {step['kind']:<24} {detail}")
    return "\n".join(lines)
