"""Timestamps taken inside a worker process, on Emailer's own objects, and the figures made from them.

The stamps are ``time.monotonic()`` (CLOCK_MONOTONIC on Linux: one clock for every
process on the machine), so the stamps of several worker processes and the
open-loop sender's can be compared with each other.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from _support import latency_ms

EVENT_TYPES = ("EmailQueued", "EmailDeliveryStarted", "EmailDeliveryFailed")
PATHS = (("accept", "EmailQueued"), ("full", "EmailDeliveryStarted"))


class Recorder:
    """Wrappers on three seams of one app; they only append, ``snapshot`` decodes afterwards."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}  # incoming message id -> first handle_batch entry
        self.published: list[tuple[float, tuple[tuple[str, bytes], ...]]] = []
        """(confirmed at, the events' (type, body)): tuples of strings and bytes, which the collector
        stops tracking, rather than the message objects (kept, they made the worker's full collections
        walk every message published, a growing pause the baseline does not have)."""
        self.busy: dict[str, list[float]] = {}  # seam -> [seconds, calls, items]
        self._lock = threading.Lock()

    def instrument(self, app: Any) -> None:
        """Replace the seams on the instances; call before ``Worker(app).start()``. No library is patched."""
        now = time.monotonic
        handle_batch, publish, send = app.pipeline.handle_batch, app.bus.publish, app.provider.send
        send_many = app.provider.send_many

        def timed_handle_batch(deliveries: Sequence[Any]) -> None:
            t0 = now()
            for d in deliveries:
                self.received.setdefault(d.message_id, t0)
            try:
                handle_batch(deliveries)
            finally:
                self._add("handle_batch", now() - t0, len(deliveries))

        def timed_publish(messages: Sequence[Any]) -> None:
            t0 = now()
            publish(messages)  # returns once the broker confirmed every message
            t1 = now()
            events = tuple((m.message_type, m.body) for m in messages if m.message_type in EVENT_TYPES)
            self.published.append((t1, events))
            # accept: a SendEmail batch's outbox (EmailQueued + DispatchEmail); dispatch: the rest.
            step = "accept" if any(m.message_type == "EmailQueued" for m in messages) else "dispatch"
            self._add(f"bus.publish[{step}]", t1 - t0, len(messages))

        def timed_send(request: Any) -> Any:
            t0 = now()
            try:
                return send(request)
            finally:
                self._add("provider.send", now() - t0, 1)

        def timed_send_many(requests: Sequence[Any]) -> Any:
            t0 = now()
            try:
                return send_many(requests)
            finally:
                self._add("provider.send_many", now() - t0, len(requests))

        app.pipeline.handle_batch = timed_handle_batch  # the worker reads it when it starts consuming
        app.bus.publish = timed_publish  # the outbox (app.outbox) calls publish on this instance
        app.provider.send = timed_send  # a single send (one DispatchEmail handled alone)
        app.provider.send_many = timed_send_many  # the DispatchEmail batch route calls this on this instance

    def _add(self, seam: str, seconds: float, items: int) -> None:
        with self._lock:
            total = self.busy.setdefault(seam, [0.0, 0, 0])
            total[0] += seconds
            total[1] += 1
            total[2] += items

    def snapshot(self) -> dict[str, Any]:
        """Everything recorded, as JSON-able data (call once the worker has stopped)."""
        confirmed: dict[str, dict[str, float]] = {t: {} for t in EVENT_TYPES}
        for confirmed_at, events in list(self.published):
            for message_type, body in events:
                email_id = json.loads(body)["email_id"]
                confirmed[message_type].setdefault(email_id, confirmed_at)
        return {"received": dict(self.received), "confirmed": confirmed, "busy": dict(self.busy)}


@dataclass
class Stamps:
    """The snapshots of every worker process of a run, merged (earliest stamp wins)."""

    received: dict[str, float] = field(default_factory=dict)
    confirmed: dict[str, dict[str, float]] = field(default_factory=lambda: {t: {} for t in EVENT_TYPES})
    busy: dict[str, list[float]] = field(default_factory=dict)

    def add(self, snapshot: Mapping[str, Any]) -> None:
        _merge_min(self.received, snapshot["received"])
        for event, stamps in snapshot["confirmed"].items():
            _merge_min(self.confirmed.setdefault(event, {}), stamps)
        for seam, (seconds, calls, items) in snapshot["busy"].items():
            total = self.busy.setdefault(seam, [0.0, 0, 0])
            total[0] += seconds
            total[1] += calls
            total[2] += items


def _merge_min(into: dict[str, float], stamps: Mapping[str, float]) -> None:
    for key, at in stamps.items():
        into[key] = min(at, into.get(key, at))


def path_figures(stamps: Stamps, received_by_email: Mapping[str, float]) -> dict[str, Any]:
    """Throughput and latency of the accept and the full path; ``received_by_email``: email id -> start."""
    first = min(received_by_email.values())
    out: dict[str, Any] = {}
    for name, event in PATHS:
        confirmed = stamps.confirmed[event]
        latencies = [confirmed[e] - t for e, t in received_by_email.items() if e in confirmed]
        elapsed = max(confirmed.values()) - first if confirmed else float("nan")
        out[name] = {
            "until": f"{event} confirmed",
            "elapsed_s": round(elapsed, 3),
            "emails_per_s": round(len(latencies) / elapsed, 1) if latencies else 0.0,
            **latency_ms(latencies),
        }
    return out


def worker_time(stamps: Stamps) -> dict[str, Any]:
    """Seconds spent in each instrumented seam, summed over the worker processes."""
    return {
        seam: {"s": round(seconds, 3), "calls": int(calls), "items": int(items)}
        for seam, (seconds, calls, items) in sorted(stamps.busy.items())
    }
