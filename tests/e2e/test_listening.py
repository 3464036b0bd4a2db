"""Where the gateway listens, and who may use it: banner after the bind, a taken port, API tokens.

All on the embedded defaults (no servers); every process listens on loopback
only. A non-loopback address is exercised without ever serving it: the port is
held by a socket bound there that never listens, so start-up stops at the bind.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Process, base_env, free_port

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path)


def cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emailer.entrypoints.cli", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("emailer: ")]
    assert len(errors) == 1, output
    return errors[0]


def banner_url(process: Process, marker: str) -> str:
    line = process.wait_for_line(marker, timeout=60)
    found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert found, line
    return found.group(0)


def test_run_prints_the_real_url_after_the_bind_and_the_try_line_carries_it(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    process = Process(["run", "--port", "0"], env, tmp_path)
    processes.append(process)
    url = banner_url(process, "  API ")
    assert not url.endswith(":0")
    # The banner comes once the socket is served: the URL answers at once, no waiting.
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    try_line = process.wait_for_line("  try ", timeout=5)
    assert f"--gateway-url {url} " in try_line
    process.proc.terminate()
    assert process.wait_exit(30) == 0
    assert "Traceback" not in "".join(process.output)


def test_gateway_prints_the_real_url_after_the_bind(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    assert cli(tmp_path, env, "db", "upgrade").returncode == 0
    process = Process(["gateway", "--port", "0"], env, tmp_path)
    processes.append(process)
    url = banner_url(process, "gateway listening on")
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    process.proc.terminate()  # SIGTERM: uvicorn shuts down, the clean-up runs, exit 0
    assert process.wait_exit(30) == 0


@pytest.mark.parametrize("command", ["run", "gateway"])
def test_a_taken_port_is_one_line_naming_it(tmp_path: Path, env: dict[str, str], command: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli(tmp_path, env, command, "--port", str(port))
    line = one_line_error(result)
    assert str(port) in line and "--port" in line and "EMAILER_GATEWAY_PORT" in line
    assert "Emailer is running" not in result.stdout and "listening" not in result.stdout


@pytest.mark.parametrize("command", ["run", "gateway"])
def test_a_non_loopback_address_without_tokens_refuses_to_start(
    tmp_path: Path, env: dict[str, str], command: str
) -> None:
    line = one_line_error(cli(tmp_path, env, command, "--host", "0.0.0.0", "--port", str(free_port())))
    assert "EMAILER_API_TOKENS" in line and "EMAILER_GATEWAY_ALLOW_ANONYMOUS" in line


@pytest.mark.parametrize("command", ["run", "gateway"])
def test_allow_anonymous_lets_it_past_the_token_check(
    tmp_path: Path, env: dict[str, str], command: str
) -> None:
    with socket.socket() as held:  # bound, never listening: the start stops at its own bind
        held.bind(("0.0.0.0", 0))
        port = held.getsockname()[1]
        result = cli(
            tmp_path,
            {**env, "EMAILER_GATEWAY_ALLOW_ANONYMOUS": "true"},
            command, "--host", "0.0.0.0", "--port", str(port),
        )  # fmt: skip
    line = one_line_error(result)
    assert f"port {port} is already in use" in line and "EMAILER_API_TOKENS" not in line


def test_bad_token_entries_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    bad = {**env, "EMAILER_API_TOKENS": f"{TOKEN},short"}
    line = one_line_error(cli(tmp_path, bad, "gateway", "--port", str(free_port())))
    assert "EMAILER_API_TOKENS entry 2" in line and TOKEN not in line


def test_send_and_status_present_the_api_token(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    process = Process(["run", "--port", "0"], {**env, "EMAILER_API_TOKENS": TOKEN}, tmp_path)
    processes.append(process)
    url = banner_url(process, "  API ")
    send = ("send", "--gateway-url", url, "--to", "ann@example.com", "--subject", "Hi", "--text", "hello")

    line = one_line_error(cli(tmp_path, env, *send))
    assert "requires an API token" in line and "EMAILER_API_TOKEN" in line
    wrong = {**env, "EMAILER_API_TOKEN": secrets.token_urlsafe(24)}
    line = one_line_error(cli(tmp_path, wrong, *send))
    assert "the gateway refused the API token" in line and "EMAILER_API_TOKEN" in line

    right = {**env, "EMAILER_API_TOKEN": TOKEN}
    sent = cli(tmp_path, right, *send)
    assert sent.returncode == 0, sent.stderr
    email_id = sent.stdout.split()[1]
    shown = cli(tmp_path, right, "status", "--gateway-url", url, email_id)
    assert shown.returncode == 0 and f"email {email_id}" in shown.stdout, shown.stderr
    line = one_line_error(cli(tmp_path, wrong, "status", "--gateway-url", url, email_id))
    assert "the gateway refused the API token" in line
