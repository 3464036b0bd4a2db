"""End to end: the client package on its own, and messages built from the exported schemas alone.

``test_the_client_alone_sends_and_waits`` builds a virtual environment holding
only ``clients/python`` (pip install; about 10 s with a warm pip cache) and runs
a script there against ``emailer worker`` on RabbitMQ: one ``send_and_wait``,
then ``EMAILER_CLIENT_CONCURRENT`` (default 100) concurrent ones from one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from contracts.base import Command
from contracts.schema import message_schema, public_message_types
from tests.e2e.harness import EventTap, Stack
from tests.schema_instances import minimal_instance

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
CONCURRENT = int(os.environ.get("EMAILER_CLIENT_CONCURRENT", "100"))


def _client_only_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(ROOT / "clients" / "python")],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return python


def test_the_client_alone_sends_and_waits(stack: Stack, tmp_path: Path) -> None:
    python = _client_only_venv(tmp_path / "client-venv")
    stack.start_worker()
    args = {
        "bus_url": stack.amqp_url, "endpoint": stack.topology.input_queue,
        "exchange": stack.topology.events_exchange, "concurrent": CONCURRENT,
    }  # fmt: skip
    run = subprocess.run(
        [str(python), str(Path(__file__).with_name("client_venv_script.py")), json.dumps(args)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["importable"] == []  # none of the service's packages, nor its dependencies
    single = report["single"]
    assert single["type"] == "EmailDeliveryStarted" and single["email_id"] == single["expected"]
    results = report["results"]
    assert len(results) == CONCURRENT
    assert all(sent == got and kind == "EmailDeliveryStarted" for sent, got, kind in results)
    assert len({sent for sent, _, _ in results}) == CONCURRENT


COMMANDS = sorted(name for name, cls in public_message_types().items() if issubclass(cls, Command))


def test_minimal_instances_from_the_schemas_alone_are_accepted_by_a_running_worker(
    stack: Stack, tap: EventTap
) -> None:
    """Every public command, built from its exported schema's ``required`` only."""
    stack.start_worker()
    sent = {}
    for name in COMMANDS:
        instance = minimal_instance(message_schema(public_message_types()[name]))
        instance["email_id"] = f"minimal-{name}"
        stack.send_command(instance, message_type=name)
        sent[name] = instance
    tap.wait_for("EmailQueued", sent["SendEmail"]["email_id"])
    tap.wait_for("EmailDeliveryStarted", sent["SendEmail"]["email_id"])
    # CancelEmail for an email that does not exist changes nothing, and it is not refused:
    # a sentinel sent after it is handled, and the error queue stays empty.
    sentinel = minimal_instance(message_schema(public_message_types()["SendEmail"]))
    sentinel["email_id"] = "minimal-sentinel"
    stack.send_command(sentinel)
    tap.wait_for("EmailDeliveryStarted", "minimal-sentinel")
    from kombu.connection import Connection

    with Connection(stack.amqp_url) as conn:
        _, count, _ = conn.channel().queue_declare(stack.topology.error_queue, passive=True)
    assert count == 0
