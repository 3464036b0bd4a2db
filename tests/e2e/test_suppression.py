"""A bounced recipient is not sent to on the next email, and its event says why (worker, ingress, sandbox)."""

from __future__ import annotations

import uuid

import pytest

from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Stack, wait_until
from tests.e2e.test_webhooks import (  # noqa: F401 - fixtures: a sandbox posting webhooks to the ingress
    ingress_port,
    sandbox,
    sandbox_webhook,
    start_ingress,
)

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

TO = ["bounce@example.com", "ana@example.com"]


def send(stack: Stack) -> str:
    email_id = f"sup-{uuid.uuid4().hex[:12]}"
    stack.send_command({"email_id": email_id, "from": {"email": "shop@example.com"},
                        "to": [{"email": a} for a in TO], "subject": "Hi", "text": "Hi"})  # fmt: skip
    return email_id


def suppressions(stack: Stack, *args: str) -> str:
    process = stack.start("suppressions", *args)
    assert process.wait_exit(60) == 0, "".join(process.output)
    return "".join(process.output)


def test_a_bounced_recipient_is_not_sent_to_again_and_its_event_says_why(
    stack: Stack,
    tap: EventTap,
    ingress_port: int,  # noqa: F811
    sandbox_webhook: tuple[str, str, str],  # noqa: F811
    sandbox_client: SandboxClient,
) -> None:
    start_ingress(stack, ingress_port, [sandbox_webhook[2]])
    stack.start_worker()
    first = send(stack)
    tap.wait_for("EmailDeliveryCompleted", first, timeout=60)
    assert "bounce@example.com\tbounced\t" in suppressions(stack, "list")

    second = send(stack)
    tap.wait_for("EmailDeliveryStarted", second, timeout=60)
    [failed] = tap.of("EmailRecipientDeliveryFailed", second)
    assert failed.body["recipient"] == "bounce@example.com"
    assert failed.body["failure"] == "suppressed"
    assert failed.body["reason"] == f"suppressed: bounced after email {first}"
    [request] = sandbox_client.messages(second)
    [personalization] = request["body"]["personalizations"]
    assert [a["email"] for a in personalization["to"]] == ["ana@example.com"]
    done = tap.wait_for("EmailDeliveryCompleted", second, timeout=60)
    assert {o["recipient"]: o["outcome"] for o in done.body["outcomes"]} == {
        "bounce@example.com": "failed",
        "ana@example.com": "delivered",
    }

    assert "removed: bounce@example.com" in suppressions(stack, "remove", "Bounce@Example.com")
    third = send(stack)
    wait_until(lambda: sandbox_client.messages(third), 60, "the third email at the provider")
    [request] = sandbox_client.messages(third)
    assert [a["email"] for a in request["body"]["personalizations"][0]["to"]] == TO
