"""DELETE /v1/emails/{id}: whether the cancel took effect, or came too late; /readyz and a refused API key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from emailer.adapters.persistence import schema
from emailer.adapters.persistence.tables import outbox
from emailer.adapters.providers.gate import CONFIGURATION, RATE_LIMITED
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from tests.factories import send_email_payload

TOKEN = "send-token-0123456789"
READ_TOKEN = "read-token-0123456789"


@pytest.fixture
def app(tmp_path: Path, unique_name: str) -> Iterator[App]:
    settings = load_settings(
        var_dir=tmp_path, input_queue=f"{unique_name}.in", events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error", api_tokens=f"send:{TOKEN},read:{READ_TOKEN}",
    )  # fmt: skip
    application = bootstrap(settings)
    schema.upgrade(application.engine)
    application.bus.connect()
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    from emailer.entrypoints.gateway.app import create_app

    with TestClient(create_app(app), headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def queued(client: TestClient) -> str:
    payload = send_email_payload()
    assert client.post("/v1/emails", json=payload).status_code == 202
    return str(payload["email_id"])


def outbox_types(app: App) -> list[str]:
    with app.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(outbox.c.message_type))]


def test_a_cancel_in_time_answers_200_and_publishes_email_cancelled_once(
    client: TestClient, app: App
) -> None:
    email_id = queued(client)
    first = client.delete(f"/v1/emails/{email_id}", headers={"X-Correlation-Id": "ops-1"})
    again = client.delete(f"/v1/emails/{email_id}")
    assert first.status_code == again.status_code == 200
    assert first.json() == {"email_id": email_id, "cancelled": True, "status": "cancelled"}
    assert outbox_types(app).count("EmailCancelled") == 1
    view = client.get(f"/v1/emails/{email_id}", headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()
    assert view["status"] == "cancelled"


def test_a_cancel_after_the_provider_took_the_email_is_409_with_its_state(
    client: TestClient, app: App
) -> None:
    email_id = queued(client)
    uow = app.new_uow()
    with uow:
        email = uow.emails.get(email_id)
        assert email is not None
        email.delivery_started("sendgrid", "msg-1", app.clock.now())
        uow.commit()
    response = client.delete(f"/v1/emails/{email_id}")
    assert response.status_code == 409
    body = response.json()
    assert body["cancelled"] is False and body["status"] == "accepted" and "too late" in body["error"]
    assert "EmailCancelled" not in outbox_types(app)


def test_cancelling_an_unknown_email_is_404_and_needs_the_send_scope(client: TestClient) -> None:
    assert client.delete("/v1/emails/no-such-email").status_code == 404
    read_only = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert client.delete("/v1/emails/no-such-email", headers=read_only).status_code == 401


def test_the_openapi_document_lists_every_answer_of_a_cancel(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/emails/{email_id}"]["delete"]
    assert {"200", "401", "404", "409", "503"} <= set(operation["responses"])


def test_a_refused_api_key_turns_readyz_red_and_a_rate_limit_pause_does_not(
    client: TestClient, app: App
) -> None:
    now = app.clock.now()
    app.provider_state.pause("sendgrid", now + timedelta(seconds=30), RATE_LIMITED, "HTTP 429", now)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "sendgrid" in ready.json()["provider_paused_until"]
    app.provider_state.pause("sendgrid", now + timedelta(seconds=60), CONFIGURATION, "HTTP 401", now)
    red = client.get("/readyz")
    assert red.status_code == 503
    assert "HTTP 401" in red.json()["missing"]["provider sendgrid"]
    assert red.json()["checks"]["provider sendgrid"] is False
    app.provider_state.resume("sendgrid")
    assert client.get("/readyz").status_code == 200
