"""A fault-test driver: real processes, faults at named points, outcomes counted per email id.

A run sends N ``SendEmail`` commands the way another service does (raw kombu,
NServiceBus headers, one correlation id per email), lets the caller inject
faults while the workers run (SIGKILL, a cut TCP proxy, a sandbox mode), then
waits, within a bound, until every email is settled, and counts for each email
id: was it stored, how many provider requests carried it, was
``EmailDeliveryStarted`` seen (with the command's correlation id), did anything
land in the error queue. ``Tally`` holds the verdict: lost, duplicated, stuck.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kombu.connection import Connection
from kombu.messaging import Producer
from sqlalchemy import create_engine, text

from contracts.wire import H
from emailer.adapters.persistence.engine import normalize_url
from emailer.sandbox.client import SandboxClient
from tests.e2e.harness import EventTap, Process, Stack
from tests.factories import send_email_payload
from tests.proxy import TcpProxy


@dataclass
class Tally:
    """What happened to each email id of a run."""

    sent: list[str]
    stored: set[str]
    provider_requests: Counter[str]
    started: dict[str, list[str]]  # email id -> correlation ids of its EmailDeliveryStarted events
    correlation: dict[str, str]  # email id -> the correlation id its command carried
    in_error: int
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> list[str]:
        """Accepted by the bus, yet never stored."""
        return [e for e in self.sent if e not in self.stored]

    @property
    def duplicated(self) -> list[str]:
        """Handed to the provider more than once."""
        return [e for e, n in self.provider_requests.items() if n > 1]

    @property
    def stuck(self) -> list[str]:
        """Stored but never confirmed as started (no EmailDeliveryStarted)."""
        return [e for e in self.sent if e in self.stored and not self.started.get(e)]

    @property
    def foreign_correlation(self) -> list[str]:
        """An EmailDeliveryStarted that does not carry its command's correlation id."""
        return [e for e, ids in self.started.items() if any(c != self.correlation[e] for c in ids)]

    def summary(self) -> str:
        return (
            f"sent={len(self.sent)} stored={len(self.stored)} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} stuck={len(self.stuck)} in_error={self.in_error} "
            f"provider_requests={sum(self.provider_requests.values())} statuses={dict(self.statuses)}"
        )


class FaultRun:
    def __init__(self, stack: Stack, tap: EventTap, sandbox: SandboxClient) -> None:
        self.stack = stack
        self.tap = tap
        self.sandbox = sandbox
        self.correlation: dict[str, str] = {}
        self.sent: list[str] = []

    def send(self, count: int, prefix: str = "f") -> list[str]:
        """Publish ``count`` SendEmail commands (confirmed by the broker); their email ids."""
        ids = []
        with Connection(self.stack.amqp_url) as conn:
            producer = Producer(conn.channel())
            for _ in range(count):
                email_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
                correlation = f"corr-{email_id}"
                body = send_email_payload(email_id=email_id, attachments=[])
                message_id = str(uuid.uuid4())
                headers = {
                    H.MESSAGE_ID: message_id,
                    H.ENCLOSED_MESSAGE_TYPES: "SendEmail",
                    H.CORRELATION_ID: correlation,
                }
                producer.publish(
                    json.dumps(body), exchange="", routing_key=self.stack.topology.input_queue,
                    delivery_mode=2, content_type="application/json", message_id=message_id, headers=headers,
                )  # fmt: skip
                self.correlation[email_id] = correlation
                ids.append(email_id)
        self.sent.extend(ids)
        return ids

    def tally(self) -> Tally:
        engine = create_engine(normalize_url(self.stack.database_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT id, status FROM emails")).all()
        finally:
            engine.dispose()
        ours = set(self.sent)
        stored = {r[0] for r in rows if r[0] in ours}
        statuses = Counter(str(r[1]) for r in rows if r[0] in ours)
        requests: Counter[str] = Counter()
        for message in self.sandbox.messages():
            email_id = message["body"].get("custom_args", {}).get("email_id")
            if email_id in ours:
                requests[email_id] += 1
        started: dict[str, list[str]] = {}
        for event in self.tap.of("EmailDeliveryStarted"):
            email_id = event.body["email_id"]
            if email_id in ours:
                started.setdefault(email_id, []).append(str(event.headers.get(H.CORRELATION_ID)))
        return Tally(
            sent=list(self.sent),
            stored=stored,
            provider_requests=requests,
            started=started,
            correlation=dict(self.correlation),
            in_error=self._error_depth(),
            statuses=statuses,
        )

    def wait_settled(self, timeout: float, done: Callable[[Tally], bool] | None = None) -> Tally:
        """Tally until every email is stored and started (or ``done``), or ``timeout`` passes."""
        finished = done or (lambda t: not t.lost and not t.stuck)
        deadline = time.monotonic() + timeout
        tally = self.tally()
        while not finished(tally) and time.monotonic() < deadline:
            time.sleep(0.5)
            tally = self.tally()
        return tally

    def _error_depth(self) -> int:
        with Connection(self.stack.amqp_url) as conn:
            channel: Any = conn.channel()
            try:
                return int(channel.queue_declare(self.stack.topology.error_queue, passive=True).message_count)
            except Exception:  # noqa: BLE001 - no error queue yet: nothing failed
                return 0


# -- faults through a proxy the test owns, and what a process logged --------------------------


def proxy_for(url: str, default_port: int) -> TcpProxy:
    """A TCP proxy in front of the service ``url`` names (RabbitMQ, PostgreSQL)."""
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{proxy.host}:{proxy.port}".lstrip("@")))


def logged(process: Process, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``process`` (EMAILER_LOG_FORMAT=json) whose event is ``event``."""
    found = []
    for line in list(process.output):
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found
