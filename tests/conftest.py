"""Fixtures for the real services the tests talk to, and the CI rule about them.

Outside CI, a test that needs a service that is not reachable is skipped, and
``-ra`` makes the run say which and why. In CI (``CI=true``) the same thing is
a failure: a missing service must never pass as a skip.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The client package (clients/python) is importable in the tests as it is once installed. Appended, not
# prepended: ``contracts`` keeps resolving to the repository's package, which the client's
# ``src/contracts`` symlink points at.
CLIENT_SRC = Path(__file__).resolve().parent.parent / "clients" / "python" / "src"
if str(CLIENT_SRC) not in sys.path:
    sys.path.append(str(CLIENT_SRC))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
AMQP_URL = os.environ.get("EMAILER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# A database of this checkout's own (two checkouts testing at once must not truncate each other's).
_CHECKOUT = hashlib.sha1(str(Path(__file__).resolve().parent.parent).encode()).hexdigest()[:8]
POSTGRES_URL = os.environ.get(
    "EMAILER_TEST_POSTGRES_URL", f"postgresql+psycopg://postgres@127.0.0.1:5432/emailer_test_{_CHECKOUT}"
)


def unavailable(service: str, why: str) -> None:
    """Skip (locally) or fail (in CI) a test whose service cannot be reached."""
    message = f"{service} not reachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


def _tcp_probe(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    problem = _tcp_probe(AMQP_URL, 5672)
    if problem is None:
        from kombu.connection import Connection

        try:
            with Connection(AMQP_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            problem = f"{type(exc).__name__}: {exc}"
    if problem:
        unavailable("RabbitMQ", problem)
    return AMQP_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A database of our own on the test server (created if missing)."""
    problem = _tcp_probe(POSTGRES_URL.replace("+psycopg", ""), 5432)
    if problem is None:
        try:
            _ensure_database(POSTGRES_URL)
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
    if problem:
        unavailable("PostgreSQL", problem)
    return POSTGRES_URL


def _ensure_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{parsed.database}"')


S3_ACCESS_KEY = "emailer-test-access"
S3_SECRET_KEY = "emailer-test-secret-0123456789"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, for this test session: host:port.

    It stands in for MinIO; nothing outside the tests is needed. A server that
    cannot start is a failure in CI and a skip elsewhere, like any other service.
    """
    try:
        from moto.server import ThreadedMotoServer

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means "no S3 server"
        unavailable("S3 (moto server)", f"{type(exc).__name__}: {exc}")
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, unique_name: str) -> str:
    """A bucket of this test's own on the moto server (created)."""
    from minio import Minio

    client = Minio(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region="us-east-1")
    client.make_bucket(unique_name)
    return unique_name


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A test that configures structlog (the CLI does) must not leak that into the next one."""
    yield
    import structlog

    structlog.reset_defaults()


@pytest.fixture
def unique_name() -> Iterator[str]:
    """A name no other test uses (for queues, exchanges, schemas)."""
    yield f"t{uuid.uuid4().hex[:12]}"
