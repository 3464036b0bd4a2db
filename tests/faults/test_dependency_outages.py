"""The broker or the database cut off from a running worker (through a proxy the test owns), then restored.

Commands keep arriving straight at RabbitMQ during the outage. The worker must
recover by itself, lose nothing, hand no email to the provider twice, send
nothing to `error` and stay up; an infrastructure failure spends no retry.

Small by default so CI stays quick: 60 emails, 5 s outages. The issue's full
figures (15 s broker outage, 20 s database outage, 300 emails) run with
``EMAILER_FAULT_FULL=1``; ``EMAILER_FAULT_OUTAGE_EMAILS``,
``EMAILER_FAULT_BROKER_OUTAGE`` and ``EMAILER_FAULT_DATABASE_OUTAGE`` set each
figure alone. The time from the restore to the worker's first provider request
is printed (run with ``-s``).
"""

from __future__ import annotations

import os
import time

import pytest

from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Stack, wait_until
from tests.faults.driver import FaultRun, Tally, logged, proxy_for, via

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

FULL = os.environ.get("EMAILER_FAULT_FULL", "") in ("1", "true", "yes")
EMAILS = int(os.environ.get("EMAILER_FAULT_OUTAGE_EMAILS", "300" if FULL else "60"))
BROKER_OUTAGE = float(os.environ.get("EMAILER_FAULT_BROKER_OUTAGE", "15" if FULL else "5"))
DATABASE_OUTAGE = float(os.environ.get("EMAILER_FAULT_DATABASE_OUTAGE", "20" if FULL else "5"))


def _every_email_sent(tally: Tally) -> bool:
    return not tally.lost and all(tally.provider_requests[e] >= 1 for e in tally.sent)


def _settled(tally: Tally) -> bool:
    """Nothing lost, nothing still queued, and every accepted email's EmailDeliveryStarted seen."""
    accepted = tally.statuses["accepted"]
    return not tally.lost and tally.statuses["queued"] == 0 and len(tally.started) == accepted


def _outage(
    run: FaultRun, sandbox: SandboxClient, cut: object, seconds: float
) -> tuple[float, int]:
    """Cut, send the second half while cut, restore after ``seconds``; the time to the next provider call."""
    from tests.proxy import TcpProxy

    assert isinstance(cut, TcpProxy)
    cut.cut()
    started = time.monotonic()
    run.send(EMAILS - EMAILS // 2, prefix="during")
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))  # the fault's length, not a wait
    before = sandbox.stats()["accepted"]
    cut.restore()
    restored = time.monotonic()
    wait_until(lambda: sandbox.stats()["accepted"] > before, 120, "a provider request after the restore")
    return time.monotonic() - restored, before


def test_the_broker_cut_for_a_while_mid_run_loses_and_duplicates_nothing(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    with proxy_for(stack.amqp_url, 5672) as broker:
        worker = stack.start_worker({"EMAILER_BUS_URL": via(stack.amqp_url, broker)})
        run = FaultRun(stack, tap, sandbox_client)
        run.send(EMAILS // 2, prefix="before")
        wait_until(lambda: sandbox_client.stats()["accepted"] >= EMAILS // 4, 120, "the run under way")
        recovery, _ = _outage(run, sandbox_client, broker, BROKER_OUTAGE)
        tally = run.wait_settled(timeout=180, done=lambda t: _every_email_sent(t) and not t.stuck)
    print(f"broker cut {BROKER_OUTAGE:g}s: first provider request {recovery:.2f}s after the restore; "
          f"{tally.summary()}")  # fmt: skip
    assert tally.lost == [] and tally.duplicated == [], tally.summary()
    assert all(tally.provider_requests[e] == 1 for e in tally.sent), tally.summary()
    assert tally.stuck == [] and tally.in_error == 0, tally.summary()
    assert worker.proc.poll() is None, "the worker exited"
    assert logged(worker, "bus.consumer.connection_lost"), "the cut was not noticed"


RECONCILE = {
    "EMAILER_RECONCILE_LOOKUP": "true",
    "EMAILER_RECONCILE_INTERVAL": "0.5",
    "EMAILER_RECONCILE_AFTER": "0.5",
    "EMAILER_RECONCILE_GRACE": "3",
    "EMAILER_RECONCILE_LOOKUPS": "1000",
    "EMAILER_SENDGRID_TIMEOUT": "2",
}


def test_the_database_cut_for_a_while_mid_run_spends_no_retry_and_sends_each_email_once(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    with proxy_for(stack.database_url, 5432) as database:
        # With the provider lookup on (issue 8's reconciliation), an attempt whose outcome the cut left
        # unrecorded is settled from the provider: accepted if it has the email, else sent once more.
        worker = stack.start_worker({"EMAILER_DATABASE_URL": via(stack.database_url, database), **RECONCILE})
        run = FaultRun(stack, tap, sandbox_client)
        run.send(EMAILS // 2, prefix="before")
        wait_until(lambda: sandbox_client.stats()["accepted"] >= EMAILS // 4, 120, "the run under way")
        recovery, _ = _outage(run, sandbox_client, database, DATABASE_OUTAGE)
        tally = run.wait_settled(timeout=180, done=lambda t: _settled(t) and not t.stuck)
    paused = logged(worker, "bus.consumer.paused")
    never_left = [e for e in tally.stuck if tally.provider_requests[e] == 0]
    print(f"database cut {DATABASE_OUTAGE:g}s: first provider request {recovery:.2f}s after the restore; "
          f"consumer pauses logged={len(paused)}; held in dispatching={len(tally.stuck)} "
          f"(of which never sent={len(never_left)}); {tally.summary()}")  # fmt: skip
    assert tally.lost == [] and tally.duplicated == [], tally.summary()
    assert tally.statuses["queued"] == 0, tally.summary()
    assert tally.in_error == 0, tally.summary()  # before: most of them went to `error`
    assert not logged(worker, "pipeline.moved_to_error_queue")
    retries = logged(worker, "pipeline.handler_failed_retrying")
    # Not one retry spent on the outage. (A DispatchEmail that raced the reconciler for the same email
    # may retry on a ConcurrencyConflict: that is the conflict rule, not the database being away.)
    assert [r for r in retries if "ConcurrencyConflict" not in str(r.get("error"))] == [], retries
    assert paused, "the consumer never paused"
    assert worker.proc.poll() is None, "the worker exited"
    # Every command stored and sent exactly once, every email accepted: one the cut left unrecorded
    # was reconciled from the provider, never resent blind.
    assert tally.stuck == [], tally.summary()
    assert set(tally.sent) == set(tally.provider_requests), tally.summary()
    assert set(tally.statuses) == {"accepted"}, tally.summary()


def test_a_silently_dead_broker_connection_is_noticed_within_a_few_heartbeats(
    stack: Stack, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    heartbeat = 2.0
    with proxy_for(stack.amqp_url, 5672) as broker:
        worker = stack.start_worker(
            {"EMAILER_BUS_URL": via(stack.amqp_url, broker), "EMAILER_BROKER_HEARTBEAT": str(heartbeat)}
        )
        run = FaultRun(stack, tap, sandbox_client)
        run.send(5, prefix="before")
        run.wait_settled(timeout=60)
        broker.freeze()  # no RST, no FIN: only missing heartbeats tell
        frozen = time.monotonic()
        wait_until(lambda: logged(worker, "bus.consumer.connection_lost"), 30, "the consumer to notice")
        noticed = time.monotonic() - frozen
        broker.thaw()
        run.send(5, prefix="after")
        tally = run.wait_settled(timeout=120)
    print(f"silent broker death noticed after {noticed:.2f}s (heartbeat {heartbeat:g}s); {tally.summary()}")
    assert noticed <= 3 * heartbeat + 2
    assert tally.lost == [] and tally.stuck == [] and tally.duplicated == [], tally.summary()
    assert worker.proc.poll() is None
