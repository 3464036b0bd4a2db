"""The CLI's thin layer: help without servers, schema export, masked configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emailer.entrypoints.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    for name in list(__import__("os").environ):
        if name.startswith("EMAILER_"):
            monkeypatch.delenv(name)


def test_help_lists_every_subcommand_without_touching_a_server() -> None:
    result = runner.invoke(app, ["--help"], env={"EMAILER_BUS_URL": "amqp://nobody@192.0.2.1:1//"})
    assert result.exit_code == 0
    for command in (
        "run",
        "worker",
        "gateway",
        "sandbox",
        "send",
        "status",
        "db",
        "contracts",
        "show-config",
    ):
        assert command in result.output


def test_contracts_schema_writes_one_file_per_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["contracts", "schema", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "schemas" / "SendEmail.schema.json").read_text())
    assert schema["x-message-intent"] == "Send"
    assert (tmp_path / "schemas" / "EmailRecipientDeliveryFailed.schema.json").exists()
    assert not (tmp_path / "schemas" / "DispatchEmail.schema.json").exists()
    result = runner.invoke(app, ["contracts", "schema", "--internal", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all" / "DispatchEmail.schema.json").exists()


def test_send_refuses_a_bad_address_before_sending_anything() -> None:
    result = runner.invoke(app, ["send", "--to", "nobody", "--subject", "x", "--text", "y"])
    assert result.exit_code == 2
    assert "to.0.email" in result.output


def test_send_refuses_a_missing_attachment() -> None:
    result = runner.invoke(
        app, ["send", "--to", "a@example.com", "--subject", "x", "--text", "y", "--attach", "nope.pdf"]
    )
    assert result.exit_code == 2 and "no such file" in result.output


def test_send_says_when_the_gateway_is_not_there() -> None:
    result = runner.invoke(
        app,
        [
            "send",
            "--to",
            "a@example.com",
            "--subject",
            "x",
            "--text",
            "y",
            "--gateway-url",
            "http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 1 and "cannot reach the gateway" in result.output
