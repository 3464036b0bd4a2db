"""The gateway's database and broker, brought up in the background: it serves before they answer.

A gateway started while RabbitMQ or PostgreSQL is down does not die: it
listens at once (``/healthz`` 200), ``/readyz`` answers 503 naming what is
missing, ``POST`` answers 503 with ``Retry-After`` until the broker is
connected, and one thread per dependency keeps trying under
``emailer.retries.dependency_retrying`` until it answers or the gateway stops.
Once connected, the broker's publisher reconnects by itself after a later
outage, and requests that hit a database outage get 503 (``errors.py``).

A database that answers but is not at the migration head is a problem no
waiting fixes by itself; ``run_gateway`` refuses to start on it when it is
seen on the first try, and a database that comes back behind head keeps
``/readyz`` at 503 saying what to run (it is checked again until it is right).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import structlog

from emailer.bootstrap import App
from emailer.redaction import describe
from emailer.retries import dependency_retrying

log = structlog.get_logger(__name__)

DATABASE = "database"
BROKER = "broker"


class NotYet(Exception):
    """A dependency did not answer (or is not usable yet); the message is safe to show."""


class Dependencies:
    """Brings the database (schema at head) and the broker (connected) up; says what is missing."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._missing: dict[str, str] = {DATABASE: "not checked yet", BROKER: "not connected yet"}
        self._first_try = {DATABASE: threading.Event(), BROKER: threading.Event()}
        self._schema_error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- state -------------------------------------------------------------------

    def missing(self) -> dict[str, str]:
        """Each dependency not brought up yet, with a short reason (no hosts, no driver text)."""
        with self._lock:
            return dict(self._missing)

    @property
    def broker_connected(self) -> bool:
        with self._lock:
            return BROKER not in self._missing

    @property
    def schema_ready(self) -> bool:
        with self._lock:
            return DATABASE not in self._missing

    def first_schema_error(self, timeout: float) -> BaseException | None:
        """After the first try of each (waiting up to ``timeout``): the schema error found, if any.

        None when the schema is at head, when the database did not answer (it is
        tried again in the background) or when the first try took longer than ``timeout``.
        Waiting for the broker's first try too means a normal start is ready when it serves.
        """
        deadline = time.monotonic() + timeout
        for first_try in self._first_try.values():
            first_try.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return self._schema_error

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._bring_up, args=(name, attempt), name=f"wait-{name}", daemon=True)
            for name, attempt in ((DATABASE, self._check_database), (BROKER, self._connect_broker))
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Dependencies:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the work ----------------------------------------------------------------

    def _bring_up(self, name: str, attempt: Callable[[], None]) -> None:
        retrying = dependency_retrying(
            NotYet,
            event=f"gateway.{name}_not_ready",
            should_stop=self._stopping.is_set,
            sleep=self._pause,
        )
        try:
            for try_ in retrying:
                with try_:
                    attempt()
        except NotYet:
            return  # stopping
        with self._lock:
            self._missing.pop(name, None)
        log.info(f"gateway.{name}_ready")

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # wakes at once when the gateway stops

    def _check_database(self) -> None:
        from emailer.adapters.persistence.schema import SchemaNotAtHead, check_at_head

        try:
            check_at_head(self.app.engine)
        except SchemaNotAtHead as exc:
            self._note(DATABASE, "schema not at head: run `emailer db upgrade`", exc)
            raise NotYet(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - whatever it is, the database is not usable yet
            self._note(DATABASE, "not answering (retrying)")
            raise NotYet(describe(exc)) from None
        finally:
            self._first_try[DATABASE].set()

    def _connect_broker(self) -> None:
        try:
            self.app.bus.connect(max_retries=0)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the broker is not usable yet
            self._note(BROKER, "not connected (retrying)")
            raise NotYet(describe(exc)) from None
        finally:
            self._first_try[BROKER].set()

    def _note(self, name: str, reason: str, schema_error: BaseException | None = None) -> None:
        with self._lock:
            self._missing[name] = reason
            if name == DATABASE and not self._first_try[DATABASE].is_set():
                self._schema_error = schema_error
