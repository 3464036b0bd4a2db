"""The gateway in the embedded mode (in-memory bus, SQLite): 202 after the commit, idempotent, clear 422s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.tables import emails, outbox
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from tests.factories import send_email_payload


@pytest.fixture
def app(tmp_path: Path, unique_name: str) -> Iterator[App]:
    settings = load_settings(
        var_dir=tmp_path, input_queue=f"{unique_name}.in", events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error",
    )  # fmt: skip
    application = bootstrap(settings)
    schema.upgrade(application.engine)
    application.bus.connect()
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    from emailer.entrypoints.gateway.app import create_app

    with TestClient(create_app(app)) as c:
        yield c


def rows(app: App, table: Table) -> int:
    with app.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_post_answers_202_with_location_after_the_commit(client: TestClient, app: App) -> None:
    payload = send_email_payload()
    response = client.post("/v1/emails", json=payload)
    assert response.status_code == 202
    assert response.headers["Location"] == f"/v1/emails/{payload['email_id']}"
    assert rows(app, emails) == 1  # durable before the answer
    status = client.get(response.headers["Location"]).json()
    assert status["status"] in ("queued", "dispatching", "accepted")
    assert [r["address"] for r in status["recipients"]] == ["ann@example.com", "bob@example.org"]
    assert status["timeline"][0]["kind"] == "queued"
    assert status["attachments"][0]["filename"] == "invoice.pdf" and "content" not in status["attachments"][0]


def outbox_types(app: App) -> list[str]:
    with app.engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(select(outbox.c.message_type)))


def test_reposting_the_same_command_creates_nothing_new(client: TestClient, app: App) -> None:
    payload = send_email_payload()
    first = client.post("/v1/emails", json=payload)
    again = client.post("/v1/emails", json=payload)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert rows(app, emails) == 1
    assert outbox_types(app) == ["DispatchEmail", "EmailQueued"]


def test_reposting_the_same_email_with_its_fields_in_another_order_is_the_same(
    client: TestClient, app: App
) -> None:
    payload = send_email_payload(metadata={"a": "1", "b": "2"})
    reordered = {**dict(reversed(payload.items())), "metadata": {"b": "2", "a": "1"}}
    assert client.post("/v1/emails", json=payload).status_code == 202
    assert client.post("/v1/emails", json=reordered).status_code == 202
    assert rows(app, emails) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "changed"},
        {"to": [{"email": "someone-else@example.com"}]},
        {"metadata": {"order": "other"}},
        {"send_at": "2030-01-01T00:00:00Z"},
    ],
)
def test_another_content_under_a_stored_email_id_is_409_and_changes_nothing(
    client: TestClient, app: App, change: dict[str, Any]
) -> None:
    payload = send_email_payload()
    assert client.post("/v1/emails", json=payload).status_code == 202
    with app.engine.connect() as conn:
        before = conn.execute(select(emails)).mappings().one()
    conflict = client.post("/v1/emails", json={**payload, **change})
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["email_id"] == payload["email_id"]
    assert body["error"].startswith(f"email_id {payload['email_id']} was already used for a different email")
    assert "content hash" in body["error"]
    with app.engine.connect() as conn:
        assert conn.execute(select(emails)).mappings().one() == before  # nothing changed
    assert outbox_types(app) == ["DispatchEmail", "EmailQueued"]
    assert client.post("/v1/emails", json=payload).status_code == 202  # the first one still stands


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (send_email_payload(to=[{"email": "not-an-address"}]), "to.0.email"),
        (send_email_payload(subject="Hi\r\nBcc: everyone@example.com"), "subject"),
        (send_email_payload(email_id=None), "email_id"),
    ],
)
def test_invalid_input_is_422_with_the_field_and_stores_nothing(
    client: TestClient, app: App, payload: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/emails", json=payload)
    assert response.status_code == 422
    locations = {e["field"] for e in response.json()["detail"]}
    assert field in locations
    assert rows(app, emails) == 0 and rows(app, outbox) == 0


def test_malformed_json_is_422_and_stores_nothing(client: TestClient, app: App) -> None:
    response = client.post(
        "/v1/emails", content=b'{"email_id": "x", ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["rule"] == "json_invalid"
    assert rows(app, emails) == 0


def test_unknown_email_is_404(client: TestClient) -> None:
    assert client.get("/v1/emails/nope").status_code == 404


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "bus": True}


def test_the_openapi_document_describes_send_email(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "SendEmail" in json.dumps(spec["components"]["schemas"])
