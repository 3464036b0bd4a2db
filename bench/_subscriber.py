#!/usr/bin/env python3
"""A subscriber that takes the events off the benchmark's subscriber queue, as a deployed one does.

Run by ``_ours.py`` (``throughput.py --subscriber consume``) as
``python _subscriber.py AMQP_URL QUEUE COUNT_FILE``. It consumes QUEUE with a
prefetch of 1,000, acks what each read brought (one multiple ack), and keeps
COUNT_FILE holding how many distinct events (by message id) it has taken: the
benchmark's measure of done and its end check. It writes ``0`` there once it is
consuming, and runs until it is killed.

Why it exists: with nobody consuming the subscriber queue (``--subscriber queue``,
the default), RabbitMQ confirms each persistent event only once it has written it
to disk, and those confirms now and then take 10-17 ms at 400 events/s on the
2-core machine, which the accept path's latency (until ``EmailQueued`` is
confirmed) carries. A subscriber that keeps up is what a deployment has.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kombu.connection import Connection


def main(url: str, queue: str, count_file: str) -> int:
    out = Path(count_file)
    seen: set[str] = set()
    last_tag: list[int | None] = [None]

    def on_message(message: object) -> None:
        properties = getattr(message, "properties", {}) or {}
        seen.add(str(properties.get("message_id") or getattr(message, "delivery_tag", "")))
        last_tag[0] = getattr(message, "delivery_tag", None)

    connection = Connection(url, connect_timeout=10)
    connection.connect()
    amqp = connection.connection  # py-amqp's: callbacks get the raw message, no decoding
    channel = amqp.channel()
    channel.basic_qos(0, 1000, False)
    channel.basic_consume(queue, callback=on_message)
    written = -1
    while True:
        try:
            amqp.drain_events(timeout=0.05)
            while True:
                amqp.drain_events(timeout=0)
        except TimeoutError:
            pass
        if last_tag[0] is not None:
            channel.basic_ack(last_tag[0], multiple=True)
            last_tag[0] = None
        if len(seen) != written:
            written = len(seen)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(str(written))
            os.replace(tmp, out)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
