"""Helpers for end-to-end tests: real processes, a fresh database, a subscriber on the events exchange."""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kombu.connection import Connection
from kombu.messaging import Producer

from emailer.adapters.bus import Topology


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """An ``emailer`` subcommand as a child process, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emailer.entrypoints.cli", *args],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and self.lines.empty():
                break
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"{self.args} never printed {text!r}; output:\n{''.join(self.output)[-4000:]}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Event:
    type: str
    headers: dict[str, Any]
    body: dict[str, Any]


@dataclass
class EventTap:
    """A subscriber's own queue bound to every event (``#``): what a real subscriber would see."""

    conn: Connection
    topology: Topology
    name: str
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        channel = self.conn.channel()
        channel.auto_decode = False
        self.topology.declare(channel)
        self.queue = self.topology.subscriber_queue(self.name, ["#"])(channel)
        self.queue.declare()
        self.consumer = self.conn.Consumer(self.queue, on_message=self._on_message, channel=channel)
        self.consumer.consume()

    def _on_message(self, message: Any) -> None:
        headers = dict(message.headers or {})
        self.events.append(
            Event(str(headers.get("NServiceBus.EnclosedMessageTypes")), headers, json.loads(message.body))
        )
        message.ack()

    def drain(self) -> None:
        try:
            while True:
                self.conn.drain_events(timeout=0.05)
        except TimeoutError:
            pass

    def of(self, type_name: str, email_id: str | None = None) -> list[Event]:
        self.drain()
        return [
            e
            for e in self.events
            if e.type == type_name and (email_id is None or e.body["email_id"] == email_id)
        ]

    def wait_for(self, type_name: str, email_id: str, timeout: float = 30.0) -> Event:
        found = wait_until(lambda: self.of(type_name, email_id), timeout, f"{type_name} for {email_id}")
        return found[0]  # type: ignore[no-any-return]


@dataclass
class Stack:
    """Everything one end-to-end test runs against, with the settings its processes share."""

    env: dict[str, str]
    topology: Topology
    workdir: Path
    amqp_url: str
    database_url: str
    sandbox_url: str
    processes: list[Process] = field(default_factory=list)

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> Process:
        process = Process(list(args), {**self.env, **(extra_env or {})}, self.workdir)
        self.processes.append(process)
        return process

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Process:
        worker = self.start("worker", extra_env=extra_env)
        worker.wait_for_line("worker consuming")
        return worker

    def send_command(
        self,
        body: dict[str, Any],
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        message_type: str = "SendEmail",
    ) -> str:
        """What another service does: a raw kombu publish with NServiceBus headers."""
        message_id = message_id or str(uuid.uuid4())
        headers = {"NServiceBus.MessageId": message_id, "NServiceBus.EnclosedMessageTypes": message_type}
        if correlation_id:
            headers["NServiceBus.CorrelationId"] = correlation_id
        with Connection(self.amqp_url) as conn:
            Producer(conn.channel()).publish(
                json.dumps(body), exchange="", routing_key=self.topology.input_queue, delivery_mode=2,
                content_type="application/json", message_id=message_id, headers=headers,
            )  # fmt: skip
        return message_id


def new_api_key() -> str:
    return f"SG.{secrets.token_urlsafe(24)}"


INTERNAL_KEY = secrets.token_urlsafe(32)
"""EMAILER_INTERNAL_KEY of every process a test starts on RabbitMQ (one per test session)."""


def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
    env.update(
        {"EMAILER_VAR_DIR": str(workdir / "var"), "EMAILER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    )
    return env


@contextmanager
def sandbox_process(workdir: Path, api_key: str) -> Iterator[tuple[Process, str]]:
    port = free_port()
    env = {**base_env(workdir), "EMAILER_SANDBOX_API_KEY": api_key}
    process = Process(["sandbox", "--port", str(port)], env, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/healthz"), 30, "the sandbox to answer /healthz")
        yield process, url
    finally:
        process.stop()


def answers(url: str) -> bool:
    """True when ``url`` answers 200 (a server that is really listening)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
