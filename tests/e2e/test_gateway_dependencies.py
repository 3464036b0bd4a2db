"""`emailer gateway` without its broker and database: it starts, says what is missing, answers 503, recovers.

RabbitMQ and PostgreSQL are reached through TCP proxies this test owns, cut
before the gateway starts and again while it runs; the machine's services are
never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from kombu.connection import Connection
from sqlalchemy.engine import make_url

from tests.e2e.harness import Stack, answers, free_port, wait_until
from tests.factories import send_email_payload
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]


def _proxy_for(url: str, default_port: int) -> TcpProxy:
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)


def _via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{proxy.host}:{proxy.port}".lstrip("@")))


@pytest.fixture
def proxies(stack: Stack) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    with _proxy_for(stack.amqp_url, 5672) as broker, _proxy_for(stack.database_url, 5432) as db:
        yield broker, db


def _through(stack: Stack, broker: TcpProxy, db: TcpProxy) -> dict[str, str]:
    return {
        "EMAILER_BUS_URL": _via(stack.amqp_url, broker),
        "EMAILER_DATABASE_URL": _via(stack.database_url, db),
        "EMAILER_GATEWAY_PUBLISH_TIMEOUT": "3",
    }


def _post(base: str, payload: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{base}/v1/emails", json=payload, timeout=15)


def _assert_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["dependency"] == dependency


def _around(text: str, lines: list[str]) -> str:
    """The lines near the first that contains ``text`` (empty when none does), for the failure message."""
    for i, line in enumerate(lines):
        if text in line:
            return "".join(lines[max(0, i - 3) : i + 25])
    return ""


def _queued(stack: Stack) -> int:
    with Connection(stack.amqp_url) as conn:
        return int(conn.default_channel.queue_declare(stack.topology.input_queue, passive=True).message_count)


def test_a_gateway_starts_without_broker_and_database_and_recovers_by_itself(
    stack: Stack, proxies: tuple[TcpProxy, TcpProxy]
) -> None:
    broker, db = proxies
    broker.cut()
    db.cut()
    port = free_port()
    gateway = stack.start("gateway", "--port", str(port), extra_env=_through(stack, broker, db))
    base = f"http://127.0.0.1:{port}"
    gateway.wait_for_line("gateway listening", timeout=30)

    # Up without its dependencies: alive, not ready, and it says which is missing.
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503
    assert set(ready.json()["missing"]) == {"database", "broker"}
    first = send_email_payload()
    _assert_unavailable(_post(base, first), "broker")
    _assert_unavailable(httpx.get(f"{base}/v1/emails/{first['email_id']}", timeout=15), "database")

    # Both back: the gateway connects by itself (bounded by the retry policy's longest pause).
    broker.restore()
    db.restore()
    assert wait_until(lambda: _post(base, first).status_code == 202, 40, "POST 202 after the outage")
    wait_until(lambda: answers(f"{base}/readyz"), 30, "/readyz 200")

    # Cut again while it runs: 503 with a reason, never a 500; then back again by itself.
    with broker.outage(), db.outage():
        second = send_email_payload()
        _assert_unavailable(_post(base, second), "broker")
        _assert_unavailable(httpx.get(f"{base}/v1/emails/{first['email_id']}", timeout=15), "database")
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and set(ready.json()["missing"]) == {"database", "broker"}
    assert wait_until(lambda: _post(base, second).status_code == 202, 40, "POST 202 after the second outage")

    # What was answered 202 is on the broker (no worker runs here): two emails, each once or more.
    assert _queued(stack) >= 2
    gateway.stop()
    for bad in ("Traceback", '" 500'):
        found = _around(bad, gateway.output)
        assert not found, found


def test_a_gateway_on_a_database_behind_head_refuses_to_start_in_one_line(stack: Stack) -> None:
    admin = make_url(stack.database_url)
    fresh = f"emailer_behind_{uuid.uuid4().hex[:10]}"
    import psycopg

    dsn = admin.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh}"')
    try:
        url = admin.set(database=fresh).render_as_string(hide_password=False)
        gateway = stack.start("gateway", "--port", str(free_port()), extra_env={"EMAILER_DATABASE_URL": url})
        assert gateway.wait_exit(30) == 3
        output = "".join(gateway.output)
        assert "Traceback" not in output
        errors = [line for line in output.splitlines() if line.startswith("emailer: ")]
        assert len(errors) == 1 and "emailer db upgrade" in errors[0], output
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
