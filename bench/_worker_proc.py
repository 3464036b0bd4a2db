#!/usr/bin/env python3
"""One benchmark worker process: ``Worker(bootstrap(settings))`` with the recorder on its seams.

Run by throughput.py as ``python _worker_proc.py SETTINGS_JSON OUT_JSON``. It talks
over its standard streams so that every worker starts consuming at the same moment:

  it prints ``ready`` once the app is built and instrumented and the worker prepared
  (``Worker.prepare``: connected, declared, its database connections open),
  starts the worker when it reads ``go``,
  stops it when it reads ``stop`` (or its stdin closes), then writes the
  recorder's snapshot to OUT_JSON and prints ``done``.

With BENCH_CPROFILE=PATH it also writes a cProfile (thread CPU time) of its
``handle_batch`` calls to PATH (``profile_accept.py --cprofile``).
"""

from __future__ import annotations

import cProfile
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(settings_path: str, out_path: str) -> int:
    from _recorder import Recorder

    from emailer.bootstrap import bootstrap
    from emailer.config import load_settings
    from emailer.entrypoints.logging import configure
    from emailer.entrypoints.worker import Worker

    settings = json.loads(Path(settings_path).read_text())
    configure("WARNING", "json")
    app = bootstrap(load_settings(_env_file=None, **settings))
    recorder = Recorder()
    recorder.instrument(app)
    profile = _cpu_profile(app) if os.environ.get("BENCH_CPROFILE") else None
    worker = Worker(app)
    worker.prepare()  # connected, declared, its database connections open: "go" starts only threads
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        app.close()
        return 2
    worker.start()
    sys.stdin.readline()  # "stop", or EOF if the parent went away
    worker.stop()
    Path(out_path).write_text(json.dumps(recorder.snapshot()))
    if profile is not None:
        profile.dump_stats(os.environ["BENCH_CPROFILE"])
    app.close()
    print("done", flush=True)
    return 0


def _cpu_profile(app: Any) -> cProfile.Profile:
    """BENCH_CPROFILE=PATH: cProfile of the consumer's ``handle_batch`` calls in thread CPU time."""
    profile = cProfile.Profile(time.thread_time)
    handle_batch = app.pipeline.handle_batch

    def profiled(deliveries: Any) -> None:
        profile.enable()
        try:
            handle_batch(deliveries)
        finally:
            profile.disable()

    app.pipeline.handle_batch = profiled
    return profile


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
