#!/usr/bin/env python3
"""Run ../shared/bench/raw_pipeline.py unchanged, on queue names of its own.

raw_pipeline.py declares, purges and uses fixed names (``bench.send_email``,
``bench.events``, ``bench.events.sink``): two people running it at once on the
shared RabbitMQ would purge each other's queues. This wrapper sets those names
in the baseline's ``common`` module from ``BENCH_BASELINE_PREFIX`` before the
baseline runs. It does so at import time, so the consumer processes (started
with "spawn", which imports this file again as ``__mp_main__``) use the same
names. The database is chosen by ``BENCH_PG_DSN`` as the baseline documents.
The queues and the exchange are deleted afterwards.

Usage: BENCH_SHARED_DIR=../shared/bench python _isolated_baseline.py [raw_pipeline.py options]
"""

from __future__ import annotations

import os
import sys

_SHARED = os.environ["BENCH_SHARED_DIR"]
sys.path.insert(0, _SHARED)

import common  # type: ignore[import-not-found]  # noqa: E402 - the shared dir is on the path only now

_PREFIX = os.environ.get("BENCH_BASELINE_PREFIX")
if _PREFIX:
    common.COMMAND_QUEUE = f"{_PREFIX}.send_email"
    common.EVENTS_EXCHANGE = f"{_PREFIX}.events"
    common.EVENTS_QUEUE = f"{_PREFIX}.events.sink"
    # preload_commands took the old name as its default argument when common.py was imported.
    common.preload_commands.__defaults__ = (common.COMMAND_QUEUE, *common.preload_commands.__defaults__[1:])


def _delete_names() -> None:
    from kombu.connection import Connection

    with Connection(common.AMQP_URL, connect_timeout=10) as conn:
        channel = conn.channel()
        for queue in (common.COMMAND_QUEUE, common.EVENTS_QUEUE):
            channel.queue_delete(queue)
        channel.exchange_delete(common.EVENTS_EXCHANGE)


def main() -> None:
    import raw_pipeline  # type: ignore[import-not-found]

    sys.argv = [os.path.join(_SHARED, "raw_pipeline.py"), *sys.argv[1:]]
    try:
        raw_pipeline.main()
    finally:
        if _PREFIX:
            _delete_names()


if __name__ == "__main__":
    main()
