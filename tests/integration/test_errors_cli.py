# mypy: allow-untyped-calls
"""``emailer errors`` run for real (typer's CliRunner, and a process for the crash) against RabbitMQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.entity import Queue
from typer.testing import CliRunner

from contracts.wire import H
from emailer.adapters.bus.error_queue import AFTER_CONFIRM_BEFORE_ACK
from emailer.adapters.bus.replay import EDIT_OF
from emailer.entrypoints.cli import app
from emailer.signing import SIGNATURE_HEADER
from handlers.errors import InvalidMessage
from tests.e2e.harness import INTERNAL_KEY
from tests.factories import send_email_payload
from tests.failed_messages import put_failed

runner = CliRunner()


class Setup:
    def __init__(self, url: str, prefix: str, tmp_path: Path) -> None:
        self.url = url
        self.error = f"{prefix}.error"
        self.input = f"{prefix}.in"
        self.connection = Connection(url, transport_options={"confirm_publish": True})
        self.channel = self.connection.channel()
        self.channel.auto_decode = False
        for name in (self.error, self.input):
            Queue(name, durable=True).declare(channel=self.channel)
        self.env = {
            "EMAILER_BUS_URL": url,
            "EMAILER_INTERNAL_KEY": INTERNAL_KEY,
            "EMAILER_ERROR_QUEUE": self.error,
            "EMAILER_INPUT_QUEUE": self.input,
            "EMAILER_VAR_DIR": str(tmp_path / "var"),
        }

    def put(self, message_id: str, body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        put_failed(
            self.channel, self.error, message_id=message_id,
            body=body if body is not None else send_email_payload(), failed_queue=self.input, **kwargs,
        )  # fmt: skip

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(app, ["errors", *args], env=self.env, input=stdin)
        return result.exit_code, result.output

    def take_all(self, queue: str) -> list[dict[str, Any]]:
        """Every message on ``queue`` (removed): headers, plus the body under ``_body``."""
        found = []
        while (message := Queue(queue, no_declare=True).bind(self.channel).get(no_ack=True)) is not None:
            found.append({**dict(message.headers), "_body": bytes(message.body)})
        return found

    def close(self) -> None:
        for name in (self.error, self.input):
            self.channel.queue_delete(name)
        self.connection.release()


@pytest.fixture
def setup(rabbitmq_url: str, unique_name: str, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(rabbitmq_url, unique_name, tmp_path)
    yield s
    s.close()


def test_on_the_embedded_bus_there_is_nothing_to_do(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["errors", "list"], env={"EMAILER_BUS_URL": "memory://", "EMAILER_VAR_DIR": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "nothing to do" in result.output


@pytest.mark.rabbitmq
def test_list_groups_and_json_parses_and_show_gives_headers_body_and_trace(setup: Setup) -> None:
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    for i in range(3):
        setup.put(f"missing-{i}", exc=InvalidMessage("attachment missing"), when=t0 + timedelta(hours=i))
    setup.put("keyerror", exc=KeyError("k"), when=t0)
    code, text = setup.run("list")
    assert code == 0, text
    assert "4 failed message(s) in 2 group(s)" in text
    code, out = setup.run("list", "--json")
    listing = json.loads(out)
    big = listing["groups"][0]
    assert (big["count"], big["message_type"]) == (3, "SendEmail")
    assert big["exception_type"] == "handlers.errors.InvalidMessage"
    assert big["first_frame"].endswith(":raised")
    assert big["first_failure"].startswith("2024-05-01T12:00")
    assert big["last_failure"].startswith("2024-05-01T14:00")
    assert sorted(big["message_ids"]) == ["missing-0", "missing-1", "missing-2"]
    code, shown = setup.run("show", "missing-1")
    assert code == 0, shown
    assert H.CORRELATION_ID in shown and '  "subject": "Your order has shipped"' in shown
    assert "Traceback (most recent call last)" in shown and "InvalidMessage: attachment missing" in shown
    assert setup.run("show", "nope")[0] == 1
    assert len(setup.take_all(setup.error)) == 4  # reading changed nothing


@pytest.mark.rabbitmq
def test_replay_a_group_sends_back_only_it_with_the_same_ids_and_no_failure_headers(setup: Setup) -> None:
    retried = {"NServiceBus.Retries": "3", "Emailer.ImmediateRetries": "5", SIGNATURE_HEADER: "hmac-sha256=x"}
    for i in range(12):
        setup.put(f"m-{i:02d}", exc=InvalidMessage("attachment missing"), extra=retried)
    setup.put("other", exc=KeyError("k"))
    group = json.loads(setup.run("list", "--json")[1])["groups"][0]["id"]
    code, out = setup.run("replay", "--group", group[:6])
    assert code == 0, out
    assert out.strip().endswith("12 of 12 message(s) went back to their queue")
    back = setup.take_all(setup.input)
    assert [m[H.MESSAGE_ID] for m in back] == [f"m-{i:02d}" for i in range(12)]
    for headers in back:
        assert not [n for n in headers if n.startswith(("NServiceBus.ExceptionInfo", "NServiceBus.Retries"))]
        assert H.FAILED_Q not in headers and "Emailer.ImmediateRetries" not in headers
        assert headers[SIGNATURE_HEADER] == "hmac-sha256=x"  # same id and body: the signature still holds
    assert [m[H.MESSAGE_ID] for m in setup.take_all(setup.error)] == ["other"]


@pytest.mark.rabbitmq
def test_copies_sharing_an_id_are_named_apart_and_replay_all(setup: Setup) -> None:
    setup.put("dup", when=datetime(2024, 1, 1, tzinfo=UTC))
    setup.put("dup", when=datetime(2024, 1, 2, tzinfo=UTC))
    code, out = setup.run("replay", "dup")
    assert code == 1 and "2 times" in out
    ids = json.loads(setup.run("list", "--json")[1])["groups"][0]["message_ids"]
    assert len(ids) == 2 and all(i.startswith("dup~") for i in ids)
    code, out = setup.run("replay", ids[1])
    assert code == 0 and "1 of 1" in out
    assert setup.run("replay", "--all")[0] == 0
    assert len(setup.take_all(setup.input)) == 2 and setup.take_all(setup.error) == []


@pytest.mark.rabbitmq
def test_edit_validates_first_then_sends_a_new_id_and_removes_the_original(
    setup: Setup, tmp_path: Path
) -> None:
    payload = send_email_payload(to=[{"email": "ann@example"}])
    setup.put("bad-address", body=payload, exc=InvalidMessage("invalid SendEmail: to.0.email"))
    still_bad = tmp_path / "still-bad.json"
    still_bad.write_text(json.dumps({**payload, "subject": ""}))
    code, out = setup.run("edit", "bad-address", "--body", str(still_bad))
    assert code == 1 and "nothing changed" in out and "to.0.email" in out
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**payload, "to": [{"email": "ann@example.com"}]}))
    code, out = setup.run("edit", "bad-address", "--body", str(fixed))
    assert code == 0, out
    [sent] = setup.take_all(setup.input)
    assert sent[EDIT_OF] == "bad-address" and sent[H.MESSAGE_ID] != "bad-address"
    assert sent[H.MESSAGE_ID] in out
    assert json.loads(sent["_body"])["to"] == [{"email": "ann@example.com"}]
    assert H.FAILED_Q not in sent
    assert setup.take_all(setup.error) == []


@pytest.mark.rabbitmq
def test_internal_commands_are_not_edited(setup: Setup, tmp_path: Path) -> None:
    setup.put("dispatch", body={"email_id": "e-1"}, message_type="DispatchEmail")
    body = tmp_path / "b.json"
    body.write_text('{"email_id": "e-2"}')
    code, out = setup.run("edit", "dispatch", "--body", str(body))
    assert code == 1 and "internal command" in out
    assert len(setup.take_all(setup.error)) == 1


@pytest.mark.rabbitmq
def test_purge_asks_first_and_takes_only_what_matches(setup: Setup) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    setup.put("old-1", when=old)
    setup.put("new-1")
    setup.put("old-2", when=old)
    code, out = setup.run("purge", "--older-than", "7d", stdin="n\n")
    assert code == 1 and "nothing purged" in out
    code, out = setup.run("purge", "--older-than", "7d", stdin="y\n")
    assert code == 0 and "2 of 2 message(s) purged" in out
    assert setup.run("purge", "--older-than", "soon", "--yes")[0] == 1
    assert setup.run("purge", "new-1", "--yes")[0] == 0
    assert setup.take_all(setup.error) == [] and setup.take_all(setup.input) == []


@pytest.mark.rabbitmq
def test_a_crash_between_the_confirm_and_the_ack_leaves_a_duplicate_never_a_loss(
    setup: Setup, tmp_path: Path
) -> None:
    setup.put("fragile")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
    env.update({**setup.env, "EMAILER_CRASH_AT": AFTER_CONFIRM_BEFORE_ACK})
    process = subprocess.run(
        [sys.executable, "-m", "emailer.entrypoints.cli", "errors", "replay", "fragile"],
        env=env, cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert process.returncode == -9
    assert [m[H.MESSAGE_ID] for m in setup.take_all(setup.input)] == ["fragile"]
    assert [m[H.MESSAGE_ID] for m in setup.take_all(setup.error)] == ["fragile"]
