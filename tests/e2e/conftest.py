"""The end-to-end stack: a fresh PostgreSQL database, unique RabbitMQ names, a sandbox process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from kombu.connection import Connection
from sqlalchemy.engine import make_url

from emailer.adapters.bus import Topology
from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import INTERNAL_KEY, EventTap, Process, Stack, base_env, new_api_key, sandbox_process

DELAYS = (0.2, 0.4, 0.6)
"""Delayed retries in end-to-end runs: short, so that a message that keeps failing reaches `error` soon."""


def _admin_dsn(url: str) -> str:
    return (
        make_url(url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    )


@pytest.fixture
def database_url(postgres_url: str, unique_name: str) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"emailer_e2e_{unique_name}"
    with psycopg.connect(_admin_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_admin_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[str, str, SandboxClient]]:
    api_key = new_api_key()
    with sandbox_process(tmp_path, api_key) as (_, url), SandboxClient(url, api_key) as client:
        yield url, api_key, client


@pytest.fixture
def stack(
    tmp_path: Path,
    rabbitmq_url: str,
    database_url: str,
    unique_name: str,
    sandbox: tuple[str, str, SandboxClient],
) -> Iterator[Stack]:
    sandbox_url, api_key, _ = sandbox
    topology = Topology(
        input_queue=f"{unique_name}.emailer",
        events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error",
        delays=DELAYS,
    )
    env = base_env(tmp_path)
    env.update(
        {
            "EMAILER_BUS_URL": rabbitmq_url,
            "EMAILER_INTERNAL_KEY": INTERNAL_KEY,
            "EMAILER_DATABASE_URL": database_url,
            "EMAILER_INPUT_QUEUE": topology.input_queue,
            "EMAILER_EVENTS_EXCHANGE": topology.events_exchange,
            "EMAILER_ERROR_QUEUE": topology.error_queue,
            "EMAILER_PROVIDER": "sendgrid",
            "EMAILER_SENDGRID_API_KEY": api_key,
            "EMAILER_SENDGRID_BASE_URL": sandbox_url,
            "EMAILER_SENDGRID_TIMEOUT": "5",
            "EMAILER_RETRY_FIRST_DELAY": "0.2",
            "EMAILER_RETRY_MAX_DELAY": "0.5",
            "EMAILER_SCHEDULER_INTERVAL": "0.1",
            "EMAILER_OUTBOX_SWEEP_INTERVAL": "0.2",
            "EMAILER_OUTBOX_SWEEP_AFTER": "0.5",
            "EMAILER_CIRCUIT_COOLDOWN": "0.3",
            "EMAILER_DELAYED_RETRY_DELAYS": ",".join(str(d) for d in DELAYS),
        }
    )
    s = Stack(env, topology, tmp_path, rabbitmq_url, database_url, sandbox_url)
    upgrade = Process(["db", "upgrade"], env, tmp_path)
    assert upgrade.wait_exit(60) == 0, "".join(upgrade.output)
    yield s
    for process in s.processes:
        process.stop()
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        delay_queues = [q.name for q in topology.delay_queues()]
        for q in (topology.input_queue, topology.error_queue, f"{unique_name}.tap", *delay_queues):
            channel.queue_delete(q)
        channel.exchange_delete(topology.events_exchange)


@pytest.fixture
def tap(stack: Stack, unique_name: str) -> Iterator[EventTap]:
    with Connection(stack.amqp_url) as conn:
        yield EventTap(conn, stack.topology, f"{unique_name}.tap")


@pytest.fixture
def sandbox_client(sandbox: tuple[str, str, SandboxClient]) -> SandboxClient:
    return sandbox[2]
