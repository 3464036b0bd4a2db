"""The sandbox over HTTP: it answers mail sends as SendGrid does and obeys its control API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from emailer.sandbox.client import SandboxClient
from emailer.sandbox.errors import MAX_BODY_BYTES
from emailer.sandbox.server import SandboxHandle, running_sandbox

UNAUTHORIZED_BODY = {
    "errors": [
        {
            "field": None,
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "help": None,
        }
    ]
}


def a_mail(email_id: str = "e-1") -> dict[str, object]:
    return {
        "personalizations": [{"to": [{"email": "ada@example.com"}], "custom_args": {"email_id": email_id}}],
        "from": {"email": "shop@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }


@pytest.fixture
def http(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=10.0) as client:
        yield client


def send(http: httpx.Client, key: str | None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    kwargs.setdefault("json", a_mail())
    return http.post("/v3/mail/send", headers=headers, **kwargs)  # type: ignore[arg-type]


def test_a_valid_send_is_accepted_with_a_message_id(
    http: httpx.Client, api_key: str, control: SandboxClient
) -> None:
    response = send(http, api_key)

    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) == 22
    [stored] = control.messages()
    assert stored["message_id"] == message_id
    assert stored["body"] == a_mail()
    assert stored["api_key_last4"] == api_key[-4:]
    assert api_key not in json.dumps(stored)


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_missing_or_wrong_key_gets_401(http: httpx.Client, key: str | None) -> None:
    response = send(http, None if key is None else f"SG.{key}")

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED_BODY


def test_without_a_configured_key_any_sendgrid_shaped_key_passes() -> None:
    with running_sandbox(api_key=None) as sandbox, httpx.Client(base_url=sandbox.url) as http:
        assert send(http, "SG.anything").status_code == 202
        assert send(http, "not-a-sendgrid-key").status_code == 401


def test_an_oversized_body_gets_413(http: httpx.Client, api_key: str) -> None:
    response = send(http, api_key, json=None, content=b" " * (MAX_BODY_BYTES + 1))

    assert response.status_code == 413
    [error] = response.json()["errors"]
    assert "too large" in error["message"]


def test_malformed_json_gets_400_with_sendgrids_error_body(http: httpx.Client, api_key: str) -> None:
    response = send(http, api_key, json=None, content=b'{"personalizations": [')

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert set(error) == {"message", "field", "help"}
    assert error["message"].startswith("Bad Request")
    assert error["field"] is None


def test_a_body_breaking_the_rules_gets_400_naming_the_field(
    http: httpx.Client, api_key: str, control: SandboxClient
) -> None:
    mail = a_mail()
    del mail["from"]

    response = send(http, api_key, json=mail)

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["from"]
    assert control.messages() == []


def test_failure_modes_answer_as_told(http: httpx.Client, api_key: str, control: SandboxClient) -> None:
    control.set_mode("outage")
    outage = send(http, api_key)
    assert outage.status_code == 503
    assert outage.json()["errors"][0]["message"]

    control.set_mode("rate_limit", retry_after=7)
    limited = send(http, api_key)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"

    control.set_mode("error", status=502)
    assert send(http, api_key).status_code == 502

    control.set_mode("normal")
    assert send(http, api_key).status_code == 202


def test_the_key_is_checked_before_the_failure_mode(http: httpx.Client, control: SandboxClient) -> None:
    control.set_mode("outage")
    assert send(http, "SG.wrong").status_code == 401


def test_control_api_filters_counts_and_resets(
    http: httpx.Client, api_key: str, control: SandboxClient
) -> None:
    send(http, api_key, json=a_mail("e-1"))
    send(http, api_key, json=a_mail("e-2"))
    send(http, "SG.wrong")

    assert [m["body"]["personalizations"][0]["custom_args"]["email_id"] for m in control.messages("e-2")] == [
        "e-2"
    ]
    assert len(control.wait_for_messages(2, timeout=1.0)) == 2
    assert control.stats() == {"received": 3, "accepted": 2}

    control.reset()

    assert control.messages() == []
    assert control.stats() == {"received": 0, "accepted": 0}


def test_email_id_filter_also_reads_the_global_custom_args(
    http: httpx.Client, api_key: str, control: SandboxClient
) -> None:
    mail = a_mail("e-1")
    mail["custom_args"] = {"email_id": "global-1"}
    send(http, api_key, json=mail)

    assert len(control.messages("global-1")) == 1
    assert control.messages("nobody") == []


def test_mode_can_be_read_back_and_bad_settings_are_refused(
    http: httpx.Client, control: SandboxClient, api_key: str
) -> None:
    control.set_mode("slow", delay=0.5)
    assert control.mode() == {
        "mode": "slow",
        "retry_after": 60,
        "delay": 0.5,
        "status": 500,
        "reason": "The sandbox was told to reject every send.",
    }
    key = {"Authorization": f"Bearer {api_key}"}
    assert http.put("/sandbox/mode", json={"mode": "sideways"}, headers=key).status_code == 422
    assert http.put("/sandbox/mode", json={"mode": "error", "status": 404}, headers=key).status_code == 422


def test_the_control_api_answers_only_to_the_sandbox_key(http: httpx.Client, api_key: str) -> None:
    for method, path in [("GET", "/sandbox/messages"), ("GET", "/sandbox/mode"), ("GET", "/sandbox/stats"),
                         ("DELETE", "/sandbox/messages"), ("PUT", "/sandbox/mode")]:  # fmt: skip
        assert http.request(method, path, json={"mode": "outage"}).status_code == 401, path
        wrong = {"Authorization": "Bearer SG.not-the-key"}
        assert http.request(method, path, json={"mode": "normal"}, headers=wrong).status_code == 401, path
    assert http.get("/sandbox/mode", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200


def test_reject_mode_answers_400_with_the_reason_as_sendgrid_words_it(
    http: httpx.Client, api_key: str, control: SandboxClient
) -> None:
    control.set_mode("reject", reason="The from address does not match a verified Sender Identity.")
    response = send(http, api_key)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "Sender Identity" in error["message"] and error["field"] is None
    assert control.stats()["accepted"] == 0


def test_wait_for_messages_gives_up_after_its_timeout(control: SandboxClient) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        control.wait_for_messages(1, timeout=0.1)


def test_healthz(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
