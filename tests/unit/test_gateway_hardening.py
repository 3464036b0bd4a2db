"""The gateway against hostile and careless callers, in the embedded mode (no servers needed).

Body limits before parsing, 422s that do not echo the input, the same
validation as the worker, ids no email can have, and API tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.tables import emails
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from emailer.entrypoints.gateway.app import create_app
from emailer.entrypoints.gateway.auth import TokenError, check_exposure, parse_tokens
from tests.factories import send_email_payload

SEND_TOKEN = "send-token-0123456789"
READ_TOKEN = "read-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, unique_name: str) -> Iterator[MakeClient]:
    apps: list[App] = []
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        application = bootstrap(
            load_settings(var_dir=tmp_path / f"v{len(apps)}", input_queue=f"{unique_name}.in", **settings)
        )
        schema.upgrade(application.engine)
        application.bus.connect()
        apps.append(application)
        client = TestClient(create_app(application), raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for application in apps:
        application.close()


def email_rows(tmp_path: Path) -> int:
    from emailer.adapters.persistence.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'v0' / 'emailer.db'}")
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(emails)).scalar_one())
    engine.dispose()
    return count


def test_a_body_over_the_limit_is_413_before_it_is_read(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(gateway_max_body_bytes=64 * 1024)
    big = send_email_payload(text="x" * 100_000)
    response = client.post("/v1/emails", json=big)
    assert response.status_code == 413 and "65536" in response.text
    assert email_rows(tmp_path) == 0


def test_a_streamed_body_over_the_limit_is_413(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(gateway_max_body_bytes=64 * 1024)
    chunks = (b" " * 16384 for _ in range(10))  # no Content-Length: counted while it streams
    response = client.post("/v1/emails", content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert email_rows(tmp_path) == 0


def test_a_422_never_echoes_a_large_input(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    content = base64.b64encode(b"\x00" * (3 * 1024 * 1024)).decode()  # 3 MiB: over the inline cap
    payload = send_email_payload(attachments=[{"filename": "big.bin", "content": content}])
    payload["to"] = [{"email": "not-an-address"}]
    response = client.post("/v1/emails", json=payload)
    assert response.status_code == 422
    assert len(response.content) < 4096, len(response.content)
    fields = {e["field"] for e in response.json()["detail"]}
    assert "to.0.email" in fields
    assert email_rows(tmp_path) == 0


def test_length_errors_say_characters(make_client: MakeClient) -> None:
    response = make_client().post("/v1/emails", json=send_email_payload(subject="s" * 999))
    [error] = response.json()["detail"]
    assert error["field"] == "subject" and "998 characters" in error["message"]
    assert len(error["excerpt"]) <= 40


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "a\x00b"}, "subject"),
        ({"text": "nul \x00 inside"}, "text"),
        ({"metadata": {"k": "\x00"}}, "metadata.k"),
        ({"subject": "line\u2028separator"}, "subject"),
        ({"headers": {"X-Custom\n": "v"}}, "headers.X-Custom\n.[key]"),
        ({"headers": {"Sender": "evil@example.com"}}, "headers"),
    ],
)
def test_what_the_worker_could_not_store_is_refused_at_the_gateway(
    make_client: MakeClient, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    response = make_client().post("/v1/emails", json=send_email_payload(**change))
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["detail"]}
    assert email_rows(tmp_path) == 0


def test_deeply_nested_template_data_is_refused_not_a_crash(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client()
    for depth in (40, 250, 50_000):
        raw = '{"d":' * depth + "1" + "}" * depth
        body = json.dumps(send_email_payload(template_id="d-1", subject=None)).replace(
            '"template_id"', f'"template_data": {raw}, "template_id"'
        )
        response = client.post("/v1/emails", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (depth, response.status_code)
    assert email_rows(tmp_path) == 0


@pytest.mark.parametrize("email_id", ["%00", "a%00b", "x" * 300, "..", "%E2%80%A8", "a b"])
def test_an_id_no_email_can_have_is_404(make_client: MakeClient, email_id: str) -> None:
    assert make_client().get(f"/v1/emails/{email_id}").status_code == 404


# ------------------------------------------------------------------ tokens


@pytest.fixture
def locked(make_client: MakeClient) -> TestClient:
    digest = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    return make_client(api_tokens=f"send:{SEND_TOKEN}, read:{READ_TOKEN}, sha256:{digest}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_token_or_with_a_wrong_one_the_answer_is_401(locked: TestClient) -> None:
    payload = send_email_payload()
    assert locked.post("/v1/emails", json=payload).status_code == 401
    wrong = bearer("wrong-token-0123456789")
    assert locked.post("/v1/emails", json=payload, headers=wrong).status_code == 401
    assert locked.post("/v1/emails", json=payload, headers={"Authorization": SEND_TOKEN}).status_code == 401
    assert locked.get(f"/v1/emails/{payload['email_id']}").status_code == 401
    assert locked.get("/healthz").status_code == 200  # health stays open
    assert locked.get("/readyz").status_code == 200


def test_scopes_separate_sending_from_reading(locked: TestClient) -> None:
    payload = send_email_payload()
    assert locked.post("/v1/emails", json=payload, headers=bearer(READ_TOKEN)).status_code == 401
    assert locked.post("/v1/emails", json=payload, headers=bearer(SEND_TOKEN)).status_code == 202
    assert locked.get(f"/v1/emails/{payload['email_id']}", headers=bearer(SEND_TOKEN)).status_code == 401
    assert locked.get(f"/v1/emails/{payload['email_id']}", headers=bearer(READ_TOKEN)).status_code == 200


def test_a_token_stored_as_its_hash_works_for_every_scope(locked: TestClient) -> None:
    payload = send_email_payload()
    assert locked.post("/v1/emails", json=payload, headers=bearer(ADMIN_TOKEN)).status_code == 202
    assert locked.get(f"/v1/emails/{payload['email_id']}", headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_an_open_gateway_warns_on_readyz(make_client: MakeClient) -> None:
    assert "no API tokens" in make_client().get("/readyz").json()["warnings"][0]


@pytest.mark.parametrize("raw", ["short", "sha256:abc", "send:tiny"])
def test_unusable_tokens_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(TokenError, match="EMAILER_API_TOKENS entry 1"):
        parse_tokens(raw)


def test_a_public_address_without_tokens_is_refused_unless_allowed() -> None:
    with pytest.raises(TokenError, match="EMAILER_API_TOKENS"):
        check_exposure("0.0.0.0", [], allow_anonymous=False)
    check_exposure("0.0.0.0", [], allow_anonymous=True)
    check_exposure("127.0.0.1", [], allow_anonymous=False)
    check_exposure("::1", [], allow_anonymous=False)
    check_exposure("0.0.0.0", parse_tokens(SEND_TOKEN), allow_anonymous=False)
