"""The gateway on RabbitMQ: 202 means the command is on the broker (the embedded mode is in tests/unit)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kombu.connection import Connection
from sqlalchemy import func, select

from contracts import SendEmail
from emailer.adapters.persistence import schema
from emailer.adapters.persistence.tables import emails
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from emailer.entrypoints.gateway.app import create_app, http_message_id
from handlers.ports import MessageContext
from handlers.send_email import content_hash
from tests.factories import send_email_payload

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def application(tmp_path: Path, unique_name: str, rabbitmq_url: str) -> Iterator[App]:
    """Emailer on this test's own RabbitMQ names, its database migrated; the names deleted after."""
    settings = load_settings(
        var_dir=tmp_path,
        bus_url=rabbitmq_url,
        internal_key="k" * 32,
        input_queue=f"{unique_name}.in",
        events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error",
    )
    app = bootstrap(settings)
    schema.upgrade(app.engine)
    app.bus.connect()
    try:
        yield app
    finally:
        with Connection(rabbitmq_url) as conn:
            channel = conn.channel()
            channel.queue_delete(settings.input_queue)
            channel.queue_delete(settings.error_queue)
            channel.exchange_delete(settings.events_exchange)
        app.close()


def test_with_rabbitmq_202_means_the_command_is_on_the_broker(application: App, rabbitmq_url: str) -> None:
    payload = send_email_payload()
    with TestClient(create_app(application)) as c:
        assert c.post("/v1/emails", json=payload, headers={"X-Correlation-Id": "cart-5"}).status_code == 202
    with Connection(rabbitmq_url) as conn:
        message = conn.channel().basic_get(application.settings.input_queue, no_ack=True)
        assert message is not None
        assert message.headers["NServiceBus.EnclosedMessageTypes"] == "SendEmail"
        command = SendEmail.model_validate(payload)
        assert message.headers["NServiceBus.MessageId"] == http_message_id(
            payload["email_id"], content_hash(command)
        )
        assert message.headers["NServiceBus.CorrelationId"] == "cart-5"
        assert json.loads(message.body)["email_id"] == payload["email_id"]
    with application.engine.connect() as db:
        stored = db.execute(select(func.count()).select_from(emails)).scalar_one()
    assert stored == 0  # the worker stores it, not the gateway


def test_with_rabbitmq_a_stored_email_id_with_another_content_is_409_and_nothing_is_published(
    application: App, rabbitmq_url: str
) -> None:
    """The gateway looks the email up first: what it can see conflicts gets 409, a same re-post 202."""
    payload = send_email_payload()
    # as the worker would have stored it
    application.pipeline.handle_local(
        SendEmail.model_validate(payload), MessageContext("from-the-bus", "SendEmail")
    )
    with TestClient(create_app(application)) as c:
        conflict = c.post("/v1/emails", json={**payload, "subject": "changed"})
        again = c.post("/v1/emails", json=payload)
    assert conflict.status_code == 409
    assert conflict.json()["email_id"] == payload["email_id"]
    assert f"email_id {payload['email_id']} was already used" in conflict.json()["error"]
    assert again.status_code == 202  # stored with this content already: nothing to publish
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        types = []
        while (message := channel.basic_get(application.settings.input_queue, no_ack=True)) is not None:
            types.append(message.headers["NServiceBus.EnclosedMessageTypes"])
        assert types == ["DispatchEmail"]  # the stored email's own; no SendEmail was published
