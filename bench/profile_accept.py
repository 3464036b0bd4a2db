#!/usr/bin/env python3
"""Profile one worker process on the accept path: py-spy over ``_worker_proc.py`` while it takes SendEmail.

    .venv/bin/python bench/profile_accept.py --n 2000            # needs py-spy in the venv
    .venv/bin/python bench/profile_accept.py --n 10000 --top 40 --no-profile   # only the rate per slice
    .venv/bin/python bench/profile_accept.py --n 3000 --full --gil --setting provider_max_rate=0
        # the full path: until every EmailDeliveryStarted too (2N events); --setting NAME=VALUE sets Emailer's

The same stack as a closed-loop round of ``throughput.py`` (its own database,
queues and sandbox; N SendEmail pre-loaded), one worker process; the phase ends
when the subscriber queue holds N events (every ``EmailQueued``: the pre-loaded
commands come before the ``DispatchEmail`` they cause). Printed: the accept
rate per slice of N/5 emails (does it fall as the tables grow?) and, unless
``--no-profile``, the top functions of py-spy's samples of the worker (all its
threads, idle frames left out) by own time and by inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pstats
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _commands import make_command
from _ours import WorkerProcs
from _stack import emailer_settings, preload, queue_depth, stack
from _support import process_cpu_seconds, shared_cpu_meter

REPO = Path(__file__).resolve().parent.parent


def summarise(raw: Path, top: int) -> str:
    """py-spy's collapsed stacks (``frame;frame;... count``) as own / inclusive percentages."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  for f in stack_text.split(";")[1:]]  # fmt: skip
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples (non-idle, all threads)", "own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--prefetch", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--no-profile", action="store_true", help="no py-spy")
    ap.add_argument("--gil", action="store_true", help="py-spy samples only the thread holding the GIL")
    ap.add_argument("--cprofile", metavar="PATH", help="also a cProfile (CPU) of handle_batch, to PATH")
    ap.add_argument("--out", default="/tmp/profile_accept.txt", help="py-spy's raw output")
    ap.add_argument(
        "--full", action="store_true", help="the full path: until 2N events (every EmailDeliveryStarted too)"
    )
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="an Emailer setting")
    a = ap.parse_args()
    venv = REPO / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    py_spy = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if not a.no_profile and py_spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    from emailer.adapters.persistence.schema import upgrade
    from emailer.bootstrap import bootstrap
    from emailer.config import load_settings

    with stack(python, False) as s, contextlib.ExitStack() as cleanup:
        commands = [make_command(i, s.run_id) for i in range(a.n)]
        settings = emailer_settings(s, a.prefetch, a.batch_size, secrets.token_urlsafe(32))
        settings.update(item.split("=", 1) for item in a.setting)
        app = bootstrap(load_settings(_env_file=None, **settings))
        cleanup.callback(app.close)
        upgrade(app.engine)
        preload(s.conn, s.topology.input_queue, commands)
        if a.cprofile:
            os.environ["BENCH_CPROFILE"] = a.cprofile
        procs = WorkerProcs(python, settings, 1, s.workdir)
        cleanup.callback(procs.kill)
        spy = None
        if not a.no_profile:
            spy = subprocess.Popen(
                [str(py_spy), "record", "--pid", str(procs.pids[0]), "--format", "raw", "--rate",
                 str(a.rate), "--output", a.out, "--nonblocking", *(["--gil"] if a.gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1.0)
        channel = s.conn.channel()
        meter = shared_cpu_meter()
        cpu0 = process_cpu_seconds(procs.pids[0]) or 0.0
        if meter is not None:
            meter.start()
        t0 = time.monotonic()
        procs.go()
        target = 2 * a.n if a.full else a.n
        step, marks, last = max(1, target // 10), [], 0
        while (events := queue_depth(channel, s.sink_queue)) < target:
            if events // step > last // step:
                marks.append((events, time.monotonic() - t0))
            last = events
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        worker_cpu = (process_cpu_seconds(procs.pids[0]) or 0.0) - cpu0
        groups = meter.stop() if meter is not None else {}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        marks.append((target, elapsed))
        rate = a.n / elapsed
        what = "events (EmailQueued and EmailDeliveryStarted)" if a.full else "EmailQueued"
        print(f"{'full path' if a.full else 'accept phase'}: {target} {what} in {elapsed:.2f} s = "
              f"{rate:.1f} emails/s (incl. start-up)")  # fmt: skip
        print(f"  worker CPU {worker_cpu:.2f} s = {1e6 * worker_cpu / a.n:.0f} us per email; "
              f"% of one core by group: {groups}")  # fmt: skip
        previous = (0, 0.0)
        for events, at in marks:
            if events > previous[0] and at > previous[1]:
                rate = (events - previous[0]) / (at - previous[1])
                print(f"  up to {events:6d} events: {rate:7.1f} events/s")
            previous = (events, at)
        procs.stop()
        if spy is not None:
            print(summarise(Path(a.out), a.top))
        if a.cprofile:
            stats = pstats.Stats(a.cprofile)
            stats.sort_stats("tottime").print_stats(a.top)
            stats.sort_stats("cumulative").print_stats(a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
