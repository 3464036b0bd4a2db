"""A process that cannot start says why in one line naming the setting or service, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import INTERNAL_KEY

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def _emailer(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
    full_env.update({"EMAILER_VAR_DIR": str(tmp_path / "var"), "EMAILER_LOG_FORMAT": "json", **env})
    return subprocess.run(
        [sys.executable, "-m", "emailer.entrypoints.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("emailer: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_database_url_that_is_not_one_names_the_variable(tmp_path: Path) -> None:
    line = _one_line_error(_emailer(tmp_path, "worker", EMAILER_DATABASE_URL="nonsense"))
    assert "EMAILER_DATABASE_URL" in line and "postgresql://" in line


def test_an_unreachable_database_names_the_variable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/emailer"
    for command in ("worker", "db current"):
        line = _one_line_error(_emailer(tmp_path, *command.split(), EMAILER_DATABASE_URL=url))
        assert "database unreachable" in line and "EMAILER_DATABASE_URL" in line


def test_an_unreachable_broker_names_the_variable(tmp_path: Path) -> None:
    assert _emailer(tmp_path, "db", "upgrade").returncode == 0
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
    line = _one_line_error(
        _emailer(tmp_path, "worker", EMAILER_BUS_URL=url, EMAILER_INTERNAL_KEY=INTERNAL_KEY)
    )
    assert "EMAILER_BUS_URL" in line and "guest:guest" not in line  # the password is masked
    assert "unavailable" in line  # the broker, not the configuration


def test_rabbitmq_without_an_internal_key_names_the_variable(tmp_path: Path) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
    for command in ("worker", "gateway"):
        line = _one_line_error(_emailer(tmp_path, command, EMAILER_BUS_URL=url))
        assert "EMAILER_INTERNAL_KEY is required" in line and "guest:guest" not in line


def test_a_short_internal_key_is_refused_by_name(tmp_path: Path) -> None:
    line = _one_line_error(_emailer(tmp_path, "worker", EMAILER_INTERNAL_KEY="too-short"))
    assert "EMAILER_INTERNAL_KEY" in line and "at least 32 characters" in line and "too-short" not in line


def test_a_worker_on_a_database_not_at_head_says_what_to_run(tmp_path: Path) -> None:
    line = _one_line_error(_emailer(tmp_path, "worker"))
    assert "emailer db upgrade" in line
