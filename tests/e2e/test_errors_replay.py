"""End to end: a SendEmail fails into the error queue, the fault is fixed, `emailer errors` sends it once.

Worker and sandbox run as processes on RabbitMQ + PostgreSQL; `emailer errors`
runs as a process too, the way an operator runs it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection

from contracts.wire import H
from emailer.adapters.blobstore.local import LocalBlobStore
from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Stack, wait_until
from tests.factories import send_email_payload
from tests.failed_messages import put_failed

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

PDF = b"%PDF-1.4 the terms, stored only after the command failed"


def depth(stack: Stack, queue: str) -> int:
    with Connection(stack.amqp_url) as conn:
        count: int = conn.channel().queue_declare(queue=queue, passive=True).message_count
        return count


def errors(stack: Stack, *args: str, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    process = stack.start("errors", *args, extra_env=extra_env)
    code = process.wait_exit(60)
    return code, "".join(process.output)


def listing(stack: Stack) -> dict[str, Any]:
    code, out = errors(stack, "list", "--json")
    assert code == 0, out
    start = out.index("{")  # the JSON document (logs, if any, come before it)
    parsed: dict[str, Any] = json.loads(out[start:])
    return parsed


def test_after_the_fault_is_fixed_a_group_replay_sends_the_email_once(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    stack.start_worker()
    done = send_email_payload()
    done_id = stack.send_command(done)  # processed: its id is in the inbox
    tap.wait_for("EmailDeliveryStarted", done["email_id"])
    reference = {"filename": "terms.pdf", "content_type": "application/pdf",
                 "sha256": hashlib.sha256(PDF).hexdigest(), "size": len(PDF)}  # fmt: skip
    failing = send_email_payload(attachments=[reference])
    stack.send_command(failing)
    wait_until(lambda: depth(stack, stack.topology.error_queue) == 1, 30, "the command in the error queue")

    [group] = listing(stack)["groups"]
    assert group["exception_type"] == "handlers.errors.InvalidMessage"
    assert (group["message_type"], group["count"]) == ("SendEmail", 1)
    assert group["first_frame"]

    LocalBlobStore(stack.workdir / "var" / "blobs").put(PDF, "application/pdf")  # the fault, removed
    code, out = errors(stack, "replay", "--group", group["id"])
    assert code == 0, out
    assert "1 of 1 message(s) went back" in out
    tap.wait_for("EmailDeliveryStarted", failing["email_id"])

    # A copy of a message that had in fact been processed goes back too: the inbox absorbs it.
    with Connection(stack.amqp_url, transport_options={"confirm_publish": True}) as conn:
        put_failed(conn.channel(), stack.topology.error_queue, message_id=done_id, body=done,
                   failed_queue=stack.topology.input_queue)  # fmt: skip
    code, out = errors(stack, "replay", "--all")
    assert code == 0 and "1 of 1" in out, out
    sentinel = send_email_payload()
    stack.send_command(sentinel)
    tap.wait_for("EmailDeliveryStarted", sentinel["email_id"])

    for payload in (failing, done):
        assert len(sandbox_client.messages(email_id=payload["email_id"])) == 1
        assert len(tap.of("EmailQueued", payload["email_id"])) == 1
        assert len(tap.of("EmailDeliveryStarted", payload["email_id"])) == 1
    assert depth(stack, stack.topology.error_queue) == 0


def test_edit_fixes_a_refused_recipient_and_the_corrected_email_is_sent_once(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient, tmp_path: Path
) -> None:
    stack.start_worker()
    payload = send_email_payload(to=[{"email": "ann@example", "name": "Ann"}], cc=[])
    original_id = stack.send_command(payload, correlation_id="order-9")
    wait_until(lambda: depth(stack, stack.topology.error_queue) == 1, 30, "the command in the error queue")
    code, shown = errors(stack, "show", original_id)
    assert code == 0 and "to.0.email" in shown, shown

    # An invalid correction is refused and changes nothing.
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**payload, "to": [{"email": "still wrong"}]}))
    code, out = errors(stack, "edit", original_id, "--body", str(wrong))
    assert code == 1 and "nothing changed" in out, out
    assert depth(stack, stack.topology.error_queue) == 1

    # Through $EDITOR, as an operator would: a script stands in for the person.
    fixer = tmp_path / "fix.py"
    fixer.write_text(
        "import pathlib, sys\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('ann@example\"', 'ann@example.com\"'))\n"
    )
    code, out = errors(stack, "edit", original_id, extra_env={"EDITOR": f"{sys.executable} {fixer}"})
    assert code == 0, out
    started = tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    assert started.headers[H.CORRELATION_ID] == "order-9"
    [sent] = sandbox_client.messages(email_id=payload["email_id"])
    assert sent["body"]["personalizations"][0]["to"] == [{"email": "ann@example.com", "name": "Ann"}]
    assert depth(stack, stack.topology.error_queue) == 0
    sentinel = send_email_payload()
    stack.send_command(sentinel)
    tap.wait_for("EmailDeliveryStarted", sentinel["email_id"])
    assert len(sandbox_client.messages(email_id=payload["email_id"])) == 1
    [queued] = tap.of("EmailQueued", payload["email_id"])
    new_id = queued.headers[H.RELATED_TO]  # the command it came from: the edit, under its new id
    assert new_id != original_id and new_id in out
