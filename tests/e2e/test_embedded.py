"""End to end on the embedded defaults: `emailer run`, then `emailer send` and `emailer status`."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emailer.endpoint.faults import AFTER_COMMIT_BEFORE_PUBLISH
from tests.e2e.harness import Process, answers, base_env, free_port, wait_until
from tests.factories import send_email_payload

pytestmark = pytest.mark.e2e


def cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emailer.entrypoints.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts is stopped at teardown, whatever the test's outcome."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def start_run(workdir: Path, env: dict[str, str], processes: list[Process]) -> Process:
    process = Process(["run"], env, workdir)
    processes.append(process)
    process.wait_for_line("Emailer is running", timeout=60)
    url = f"http://127.0.0.1:{env['EMAILER_GATEWAY_PORT']}/healthz"
    wait_until(lambda: answers(url), 30, "the gateway to listen")
    return process


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **base_env(tmp_path),
        "EMAILER_GATEWAY_PORT": str(free_port()),
        "EMAILER_SCHEDULER_INTERVAL": "0.2",
        "EMAILER_OUTBOX_SWEEP_INTERVAL": "0.2",
        "EMAILER_OUTBOX_SWEEP_AFTER": "0",
    }


def test_send_with_an_attachment_lands_as_an_eml_file(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    run = start_run(tmp_path, env, processes)
    # A clean start warns of nothing failing (SQLite's write lock once made the warm-up wait 30 s and fail).
    assert not [line for line in run.output if '"level": "warning"' in line and "failed" in line], run.output
    attachment = tmp_path / "report.bin"
    attachment.write_bytes(bytes(range(256)) * 4)
    sent = cli(
        tmp_path,
        env,
        "send",
        "--to",
        "ann@example.com",
        "--cc",
        "bob@example.org",
        "--subject",
        "Quarterly report",
        "--text",
        "See attached.",
        "--attach",
        str(attachment),
        "--email-id",
        "report-q3",
    )
    assert sent.returncode == 0, sent.stderr
    eml = tmp_path / "var" / "mail" / "report-q3.eml"
    wait_until(eml.exists, 30, "the .eml file")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Quarterly report"
    assert message["To"] == "ann@example.com" and message["Cc"] == "bob@example.org"
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "report.bin" and part.get_content() == attachment.read_bytes()
    plain = message.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == "See attached."

    status = cli(tmp_path, env, "status", "report-q3")
    assert status.returncode == 0, status.stderr
    assert "ACCEPTED" in status.stdout
    for step in ("queued", "attempt_started", "accepted", "recipient_delivered"):
        assert step in status.stdout
    as_json = json.loads(cli(tmp_path, env, "status", "report-q3", "--json").stdout)
    assert as_json["attachments"][0]["size"] == 1024
    assert [r["status"] for r in as_json["recipients"]] == ["delivered", "delivered"]


def test_a_command_committed_before_a_crash_is_sent_after_restart(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    crashing = start_run(tmp_path, {**env, "EMAILER_CRASH_AT": AFTER_COMMIT_BEFORE_PUBLISH}, processes)
    payload = send_email_payload()
    with pytest.raises(httpx.RemoteProtocolError):  # the process dies after the commit, before answering
        httpx.post(f"http://127.0.0.1:{env['EMAILER_GATEWAY_PORT']}/v1/emails", json=payload, timeout=30)
    assert crashing.wait_exit(30) == -9
    eml = tmp_path / "var" / "mail" / f"{payload['email_id']}.eml"
    assert not eml.exists()
    start_run(tmp_path, env, processes)
    wait_until(eml.exists, 30, "the email to go out after the restart")
    status = json.loads(cli(tmp_path, env, "status", payload["email_id"], "--json").stdout)
    assert status["status"] == "accepted" and status["attempts"] == 1
    assert len(list((tmp_path / "var" / "mail").glob("*.eml"))) == 1


def test_bad_configuration_stops_start_up_naming_the_variable(tmp_path: Path, env: dict[str, str]) -> None:
    result = cli(tmp_path, {**env, "EMAILER_PREFETCH": "lots"}, "show-config")
    assert result.returncode == 2 and "EMAILER_PREFETCH" in result.stderr
    result = cli(tmp_path, {**env, "EMAILER_PROVIDER": "sendgrid"}, "show-config")
    assert result.returncode == 2 and "EMAILER_SENDGRID_API_KEY" in result.stderr


def test_show_config_masks_secrets(tmp_path: Path, env: dict[str, str]) -> None:
    secret = "SG.this-must-not-be-printed"
    internal_key = "internal-key-that-must-not-be-printed-either"
    result = cli(
        tmp_path,
        {
            **env,
            "EMAILER_PROVIDER": "sendgrid",
            "EMAILER_SENDGRID_API_KEY": secret,
            "EMAILER_BUS_URL": "amqp://user:hunter2@127.0.0.1:5672//",
            "EMAILER_INTERNAL_KEY": internal_key,
        },
        "show-config",
    )
    assert result.returncode == 0, result.stderr
    assert (
        secret not in result.stdout and "hunter2" not in result.stdout and internal_key not in result.stdout
    )
    assert json.loads(result.stdout)["internal_key"] == "**********"
    assert json.loads(result.stdout)["provider"] == "sendgrid"


def test_cancel_says_whether_it_took_effect_or_came_too_late(
    tmp_path: Path, env: dict[str, str], processes: list[Process]
) -> None:
    start_run(tmp_path, env, processes)
    base = f"http://127.0.0.1:{env['EMAILER_GATEWAY_PORT']}"
    later = send_email_payload(send_at="2099-01-01T00:00:00Z")
    assert httpx.post(f"{base}/v1/emails", json=later).status_code == 202
    cancelled = cli(tmp_path, env, "cancel", later["email_id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{later['email_id']}: cancelled"

    now = send_email_payload(attachments=[])
    assert httpx.post(f"{base}/v1/emails", json=now).status_code == 202
    def accepted() -> bool:
        return bool(httpx.get(f"{base}/v1/emails/{now['email_id']}").json()["status"] == "accepted")

    wait_until(accepted, 30, "the file provider to take the email")
    too_late = cli(tmp_path, env, "cancel", now["email_id"])
    assert too_late.returncode == 1
    assert "not cancelled: too late: the email is accepted" in too_late.stderr

    unknown = cli(tmp_path, env, "cancel", "no-such-email")
    assert unknown.returncode == 1 and "no email 'no-such-email'" in unknown.stderr
