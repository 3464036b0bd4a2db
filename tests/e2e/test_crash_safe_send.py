"""The injected crash of issue 8, item 4: the worker dies after the provider accepted, before our commit.

Processes: ``emailer worker`` (armed with the crash point, then a healthy
one), ``emailer sandbox``, and either ``emailer ingress`` with the sandbox's
signed callbacks, or the worker's reconciler asking the sandbox's Email
Activity Feed. Each way: one provider request, the email ends accepted, and
nothing is sent again once the unknown-outcome wait is over.
"""

from __future__ import annotations

import time
import uuid

import pytest

from emailer.endpoint.faults import AFTER_PROVIDER_CALL_BEFORE_COMMIT
from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Stack
from tests.e2e.test_webhooks import (  # noqa: F401 - fixtures: a sandbox posting webhooks to the ingress
    ingress_port,
    sandbox,
    sandbox_webhook,
    start_ingress,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

WAIT = 3.0
"""EMAILER_UNKNOWN_OUTCOME_WAIT in these tests: short, so that its end is reached and passed."""


def crash_after_acceptance(stack: Stack, env: dict[str, str]) -> str:
    """Send one email to a worker armed with the crash point; it dies once the sandbox took the request."""
    crashing = stack.start_worker({**env, "EMAILER_CRASH_AT": AFTER_PROVIDER_CALL_BEFORE_COMMIT})
    email_id = f"crash-{uuid.uuid4().hex[:12]}"
    stack.send_command({"email_id": email_id, "from": {"email": "shop@example.com"},
                        "to": [{"email": "ana@example.com"}], "subject": "Hi", "text": "Hi"})  # fmt: skip
    assert crashing.wait_exit(60) == -9, "the worker was to kill itself at the crash point"
    return email_id


def assert_accepted_once(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient, email_id: str, settled_by: str
) -> None:
    tap.wait_for("EmailDeliveryStarted", email_id, timeout=60)
    view = status_of(stack, email_id)
    assert view["status"] == "accepted"
    assert settled_by in [step["kind"] for step in view["timeline"]]
    # Past the end of the unknown-outcome wait (and a few scheduler passes): still one request.
    deadline = time.monotonic() + WAIT + 1.5
    while time.monotonic() < deadline:
        assert len(sandbox_client.messages(email_id)) == 1
        time.sleep(0.25)
    assert len(tap.of("EmailDeliveryStarted", email_id)) == 1


def test_the_providers_callback_settles_the_crash(
    stack: Stack,
    tap: EventTap,
    ingress_port: int,  # noqa: F811
    sandbox_webhook: tuple[str, str, str],  # noqa: F811
    sandbox_client: SandboxClient,
) -> None:
    start_ingress(stack, ingress_port, [sandbox_webhook[2]])
    env = {"EMAILER_UNKNOWN_OUTCOME_WAIT": str(WAIT)}
    email_id = crash_after_acceptance(stack, env)
    assert [m["message_id"] for m in sandbox_client.messages(email_id)]  # the provider has it
    stack.start_worker(env)
    assert_accepted_once(stack, tap, sandbox_client, email_id, settled_by="accepted")


def test_the_lookup_settles_the_crash_without_callbacks(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    env = {
        "EMAILER_UNKNOWN_OUTCOME_WAIT": str(WAIT),
        "EMAILER_RECONCILE_LOOKUP": "true",
        "EMAILER_RECONCILE_INTERVAL": "0.2",
        "EMAILER_RECONCILE_AFTER": "0.5",
        "EMAILER_RECONCILE_GRACE": "6",
        "EMAILER_RECONCILE_LOOKUPS": "20",
    }
    email_id = crash_after_acceptance(stack, env)
    stack.start_worker(env)
    assert_accepted_once(stack, tap, sandbox_client, email_id, settled_by="reconciled")


def test_a_crash_after_a_batchs_provider_calls_sends_none_of_them_twice(
    stack: Stack,
    tap: EventTap,
    ingress_port: int,  # noqa: F811
    sandbox_webhook: tuple[str, str, str],  # noqa: F811
    sandbox_client: SandboxClient,
) -> None:
    """Several emails in flight when the worker dies (the DispatchEmails of a batch are sent together):
    each one the provider took is settled by its callback, the rest are dispatched; each sent once."""
    start_ingress(stack, ingress_port, [sandbox_webhook[2]])
    env = {"EMAILER_UNKNOWN_OUTCOME_WAIT": str(WAIT)}
    crashing = stack.start_worker({**env, "EMAILER_CRASH_AT": AFTER_PROVIDER_CALL_BEFORE_COMMIT})
    ids = [f"crash-batch-{i}-{uuid.uuid4().hex[:8]}" for i in range(6)]
    for email_id in ids:
        stack.send_command({"email_id": email_id, "from": {"email": "shop@example.com"},
                            "to": [{"email": "ana@example.com"}], "subject": "Hi", "text": "Hi"})  # fmt: skip
    assert crashing.wait_exit(60) == -9, "the worker was to kill itself at the crash point"
    stack.start_worker(env)
    for email_id in ids:
        tap.wait_for("EmailDeliveryStarted", email_id, timeout=60)
        assert status_of(stack, email_id)["status"] == "accepted"
    deadline = time.monotonic() + WAIT + 1.5  # past the end of the unknown-outcome wait
    while time.monotonic() < deadline:
        assert all(len(sandbox_client.messages(email_id)) == 1 for email_id in ids)
        time.sleep(0.25)
    assert all(len(tap.of("EmailDeliveryStarted", email_id)) == 1 for email_id in ids)
