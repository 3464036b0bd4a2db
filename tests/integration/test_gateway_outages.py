"""The gateway whose database goes away: 503 with Retry-After and a reason, never a bare 500; back after.

PostgreSQL is reached through a TCP proxy the test owns, so the outage is real
for the gateway and touches nobody else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from emailer.adapters.persistence import schema
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from emailer.entrypoints.gateway.app import create_app
from tests.factories import send_email_payload
from tests.proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxied_database(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    url = make_url(postgres_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"emailer_outage_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield url.set(host=proxy.host, port=proxy.port, database=name).render_as_string(False), proxy
    finally:
        proxy.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def gateway(proxied_database: tuple[str, TcpProxy], tmp_path: Path) -> Iterator[TestClient]:
    database_url, _ = proxied_database
    app: App = bootstrap(load_settings(var_dir=tmp_path, database_url=database_url))
    schema.upgrade(app.engine)
    app.bus.connect()
    try:
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            yield client
    finally:
        app.close()


def _until(predicate_status: int, call: Callable[[], int], seconds: float = 20.0) -> int:
    """Call until it answers ``predicate_status`` or ``seconds`` pass; the last status."""
    deadline = time.monotonic() + seconds
    status = -1
    while time.monotonic() < deadline:
        status = call()
        if status == predicate_status:
            return status
        time.sleep(0.2)
    return status


def test_database_outage_answers_503_then_recovers(
    gateway: TestClient, proxied_database: tuple[str, TcpProxy]
) -> None:
    _, proxy = proxied_database
    first = send_email_payload()
    assert gateway.post("/v1/emails", json=first).status_code == 202
    with proxy.outage():
        payload = send_email_payload()
        posted = gateway.post("/v1/emails", json=payload)
        assert posted.status_code == 503, posted.text
        assert posted.headers["Retry-After"] and posted.json()["dependency"] == "database"
        read = gateway.get(f"/v1/emails/{first['email_id']}")
        assert read.status_code == 503 and read.json()["dependency"] == "database"
        ready = gateway.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
    # Back: the same request is accepted (a pooled connection the outage killed costs at most one 503).
    assert _until(202, lambda: gateway.post("/v1/emails", json=payload).status_code) == 202
    assert gateway.get(f"/v1/emails/{payload['email_id']}").status_code == 200


def test_odd_ids_on_postgresql_are_404_not_500(gateway: TestClient) -> None:
    for email_id in ("%00", "a%00b", "%F0%9F%98%80", "x" * 500):
        assert gateway.get(f"/v1/emails/{email_id}").status_code == 404
