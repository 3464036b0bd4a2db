"""The gateway with a broker that is not there yet, or that never confirms: 503s in bounded time, no server.

The bus here is a fake of the gateway's view of it (connect, ping, publish);
the database is SQLite. The same behaviour against RabbitMQ and PostgreSQL
through TCP proxies is in tests/e2e/test_gateway_dependencies.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest
from fastapi.testclient import TestClient

from emailer.adapters.bus import BusUnavailable, KombuBus
from emailer.adapters.persistence import schema
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from emailer.entrypoints.gateway.app import create_app
from emailer.entrypoints.gateway.dependencies import Dependencies
from handlers.ports import OutgoingMessage
from tests.e2e.harness import wait_until
from tests.factories import send_email_payload


class FakeBroker:
    """Refuses connections until ``up`` is set; ``stuck``: a publish waits for a confirm that never comes."""

    safe_url = "amqp://fake//"

    def __init__(self) -> None:
        self.up = threading.Event()
        self.stuck = threading.Event()
        self.published: list[OutgoingMessage] = []

    def connect(self, max_retries: int = 0) -> None:
        if not self.up.is_set():
            raise BusUnavailable(self.safe_url, "ConnectionRefusedError: [Errno 111] Connection refused")

    def ping(self, timeout: float = 2.0) -> bool:
        return self.up.is_set()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.stuck.is_set():
            time.sleep(3)  # longer than the gateway waits
        self.published.extend(messages)

    def close(self) -> None:
        pass


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def app(tmp_path: Path, broker: FakeBroker) -> Iterator[App]:
    settings = load_settings(
        var_dir=tmp_path, bus_url="amqp://guest:guest@127.0.0.1:1//", gateway_publish_timeout=0.5,
        internal_key="k" * 32,
    )
    app = bootstrap(settings, bus=cast(KombuBus, broker))
    schema.upgrade(app.engine)
    yield app
    app.close()


def test_until_the_broker_connects_post_is_503_and_readyz_names_it(app: App, broker: FakeBroker) -> None:
    with Dependencies(app) as dependencies, TestClient(create_app(app, dependencies)) as client:
        assert dependencies.first_schema_error(timeout=10) is None  # as run_gateway waits before serving
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and set(ready.json()["missing"]) == {"broker"}
        payload = send_email_payload()
        posted = client.post("/v1/emails", json=payload)
        assert posted.status_code == 503 and posted.headers["Retry-After"]
        assert posted.json()["dependency"] == "broker" and not broker.published

        broker.up.set()  # the background thread connects on its next try (first pauses are short)
        wait_until(lambda: client.get("/readyz").status_code == 200, 10, "the gateway to connect")
        assert client.post("/v1/emails", json=payload).status_code == 202
        assert len(broker.published) == 1


def test_a_publish_without_a_confirm_answers_503_in_bounded_time(app: App, broker: FakeBroker) -> None:
    broker.up.set()
    broker.stuck.set()
    with TestClient(create_app(app)) as client:
        started = time.monotonic()
        posted = client.post("/v1/emails", json=send_email_payload())
        assert time.monotonic() - started < 2.5
    assert posted.status_code == 503, posted.text
    assert posted.json()["dependency"] == "broker" and "same email_id" in posted.json()["error"]
