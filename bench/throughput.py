#!/usr/bin/env python3
"""Emailer throughput and latency: SendEmail commands through RabbitMQ + PostgreSQL + the SendGrid sandbox.

Closed loop (default): ``--rounds`` rounds (3), each one
  1. ours: a throw-away database (``emailer_bench_<random>``, migrated to head),
     unique RabbitMQ names (``bench-<random>.emailer``, ``.events``, ``.error``
     and a subscriber queue ``.sink`` bound to every event so events are stored,
     as in the baseline), an ``emailer sandbox`` child process; N persistent
     ~1 KB SendEmail commands pre-loaded (not timed); then ``--workers`` worker
     processes (``_worker_proc.py``: ``Worker(bootstrap(settings))`` with the
     recorder on its own seams) are told to start together, and the round ends
     when the subscriber queue holds every EmailQueued and EmailDeliveryStarted;
     the end state is checked (N emails accepted, N sandbox requests, no pending
     outbox row, 2N events, empty error queue);
  2. the baseline, ../shared/bench/raw_pipeline.py, unchanged, with the same N,
     prefetch and number of worker processes, on queue names and a database of
     its own (``_isolated_baseline.py``);
  3. the Celery full-path peer (``celery_full_path.py``, ``-c 2``), unless
     --no-celery or Celery is not installed (``make bench`` installs it).
  Each round prints its figures and the machine's load (1-minute load average
  sampled every second during the round); then the medians of the rounds'
  ratios: accept path / baseline, full path / baseline, full path / Celery.
Before the rounds: the sandbox's own capacity (``sandbox_capacity.py``).
After them, with --scheduler: the scheduler's cycle time with 1k and 100k
waiting emails (``scheduler_cycle.py``).

Open loop (``--rate R`` commands/s, or ``--rate auto``): nothing is pre-loaded;
the workers run and N commands are sent at R per second (on a fixed schedule).
``auto`` first runs one closed-loop round of ours and sends at 50 % of its
full-path emails/s (the rate the whole path sustains). Printed: p50/p99 of the
accept and the full path from the command's receipt by a worker, and from its
sending (what the sender sees, including the time in the input queue).

The subscriber (``--subscriber``): ``queue`` (default) leaves the events on the
subscriber queue, where the round counts them; ``consume`` starts a subscriber
process (``_subscriber.py``) that takes them as they come and counts the
distinct ones, as a deployed subscriber keeps up. It matters to latency: the
broker confirms an event nobody has taken only once it is on disk, and those
confirms now and then take 10-17 ms at 400 events/s here (``bench/README.md``).

Figures
  accept path  command received (handle_batch entry) -> its EmailQueued confirmed
  full path    command received -> its EmailDeliveryStarted confirmed (through the sandbox)
  emails/s = N / (last confirmation - first command received); p50/p99 nearest rank.
  Stamps are CLOCK_MONOTONIC, one clock for all the processes of the machine.

Options: --n (2000), --rounds (3), --workers (1), --rate R|auto, --prefetch (50),
--batch-size (50), --baseline PATH, --no-baseline, --no-celery,
--celery-concurrency (2), --subscriber queue|consume, --no-sandbox-capacity, --scheduler, --json PATH
(append the whole result as one JSON line), --keep (keep our databases),
--timeout (600 s per timed phase), --stall-timeout (60 s without progress).
Environment: BENCH_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672//),
BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432), both given
to the peers too. EMAILER_* variables are ignored: the benchmark configures
Emailer itself.

Example: .venv/bin/python bench/throughput.py --n 2000 --rounds 3 --json bench/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _ours import LoadSampler, RunOptions, run_ours
from _peers import celery_available, run_baseline, run_celery
from _support import SHARED_BENCH, BenchError, load_average, median

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = SHARED_BENCH / "raw_pipeline.py"


def venv_python() -> str:
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="SendEmail commands per run (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of ours, baseline, Celery (default 3)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--rate", default=None, help="open loop: commands/s, or 'auto' (50%% of the peak)")
    ap.add_argument("--prefetch", type=int, default=50, help="worker prefetch (default 50)")
    ap.add_argument("--batch-size", type=int, default=50, help="messages per transaction (default 50)")
    ap.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE",
        help="an Emailer setting for our workers (repeatable), e.g. provider_max_rate=0",
    )  # fmt: skip
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="raw_pipeline.py to compare with")
    ap.add_argument("--no-baseline", action="store_true", help="do not run the baseline")
    ap.add_argument("--no-celery", action="store_true", help="do not run the Celery full-path peer")
    ap.add_argument("--celery-concurrency", type=int, default=2, help="Celery worker -c (default 2)")
    ap.add_argument(
        "--subscriber",
        choices=("queue", "consume"),
        default="queue",
        help="the events: left on the subscriber queue (default), or taken by a consuming subscriber",
    )
    ap.add_argument("--no-sandbox-capacity", action="store_true", help="skip the sandbox's capacity")
    ap.add_argument("--scheduler", action="store_true", help="also time scheduler passes, 1k vs 100k waiting")
    ap.add_argument("--json", default=None, metavar="PATH", help="append the result as one JSON line")
    ap.add_argument("--keep", action="store_true", help="keep our benchmark databases")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for a timed phase")
    ap.add_argument("--stall-timeout", type=float, default=60.0, help="seconds without progress")
    args = ap.parse_args(argv)
    if min(args.n, args.rounds, args.workers, args.prefetch, args.batch_size) < 1:
        ap.error("--n, --rounds, --workers, --prefetch and --batch-size must be at least 1")
    if args.rate not in (None, "auto"):
        try:
            if float(args.rate) <= 0:
                raise ValueError
        except ValueError:
            ap.error("--rate takes a positive number of commands per second, or 'auto'")
    if any("=" not in s for s in args.setting):
        ap.error("--setting takes NAME=VALUE")
    if not args.no_baseline and args.rate is None and not args.baseline.is_file():
        ap.error(f"no baseline at {args.baseline}: give --baseline PATH or --no-baseline")
    return args


def options(args: argparse.Namespace) -> RunOptions:
    settings = tuple((name, value) for name, _, value in (s.partition("=") for s in args.setting))
    return RunOptions(
        args.n, args.workers, args.prefetch, args.batch_size, args.keep, args.timeout, args.stall_timeout,
        settings, args.subscriber,
    )  # fmt: skip


# ------------------------------------------------------------------ closed loop: rounds


def one_round(args: argparse.Namespace, python: str, index: int) -> dict[str, Any]:
    """Ours, then the baseline, then the Celery peer; ratios within the round."""
    sampler = LoadSampler()
    sampler.start()
    entry: dict[str, Any] = {"round": index, "ours": run_ours(options(args), python)}
    print_ours(entry["ours"])
    ok = entry["ours"]["ok"]
    if not args.no_baseline:
        base = run_baseline(args.baseline, args.n, args.prefetch, args.workers, python)
        entry["baseline"] = base
        ok = ok and base.get("ok", True) is not False
        print_baseline(base)
    if not args.no_celery and celery_available():
        celery = run_celery(args.n, args.celery_concurrency, python)
        entry["celery"] = celery
        ok = ok and bool(celery["ok"])
        print(f"  Celery full path ({celery['variant']}): {celery['emails_per_s']:8.1f} emails/s "
              f"(machine busy {celery['cpu'].get('machine_busy_pct_of_all_cores', '?')} %)")  # fmt: skip
    entry["load"] = sampler.finish()
    entry["ratio"] = round_ratios(entry)
    entry["ok"] = ok
    load = entry["load"]
    print(f"round {index}: {describe_ratios(entry['ratio'])}; load average (1 min) mean {load['mean']}, "
          f"max {load['max']} on {os.cpu_count()} cores\n")  # fmt: skip
    return entry


def round_ratios(entry: dict[str, Any]) -> dict[str, float]:
    ours, ratio = entry["ours"], {}
    if "baseline" in entry:
        base = entry["baseline"]["msgs_per_s"]
        ratio["accept_vs_baseline"] = round(ours["accept"]["emails_per_s"] / base, 3)
        ratio["full_vs_baseline"] = round(ours["full"]["emails_per_s"] / base, 3)
    if "celery" in entry:
        ratio["full_vs_celery"] = round(ours["full"]["emails_per_s"] / entry["celery"]["emails_per_s"], 3)
    return ratio


RATIO_NAMES = {
    "accept_vs_baseline": "accept / baseline",
    "full_vs_baseline": "full / baseline",
    "full_vs_celery": "full / Celery full",
}


def describe_ratios(ratio: dict[str, float]) -> str:
    return ", ".join(f"{RATIO_NAMES[k]} {v:.2f}x" for k, v in ratio.items()) or "no peer run"


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in RATIO_NAMES:
        values = [r["ratio"][key] for r in rounds if key in r["ratio"]]
        if values:
            summary[key] = {"median": round(median(values), 3), "min": min(values), "max": max(values)}
    for path in ("accept", "full"):
        figures = [r["ours"][path]["emails_per_s"] for r in rounds]
        summary[f"ours_{path}_emails_per_s_median"] = median(figures)
    return summary


def print_summary(args: argparse.Namespace, rounds: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"Summary: {len(rounds)} round(s), N={args.n}, {args.workers} worker process(es)")
    print(
        "  round  load(mean/max)  accept/s   full/s  baseline/s  Celery full/s  accept/base  full/base"
        "  full/Celery"
    )
    for r in rounds:
        o = r["ours"]
        ratio = {k: r["ratio"].get(k, float("nan")) for k in RATIO_NAMES}
        base = r.get("baseline", {}).get("msgs_per_s", float("nan"))
        cel = r.get("celery", {}).get("emails_per_s", float("nan"))
        print(
            f"  {r['round']:5}  {r['load']['mean']:5.2f}/{r['load']['max']:5.2f}  "
            f"{o['accept']['emails_per_s']:8.1f} {o['full']['emails_per_s']:8.1f} {base:11.1f} {cel:14.1f}  "
            f"{ratio['accept_vs_baseline']:10.2f}x {ratio['full_vs_baseline']:9.2f}x "
            f"{ratio['full_vs_celery']:11.2f}x"
        )
    for key, name in RATIO_NAMES.items():
        if key in summary:
            s = summary[key]
            print(f"  median {name}: {s['median']:.2f}x (min {s['min']:.2f}x, max {s['max']:.2f}x)")


# ------------------------------------------------------------------ open loop


def run_open_loop(args: argparse.Namespace, python: str) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": load_average()}
    if args.rate == "auto":
        peak = run_ours(options(args), python)
        print_ours(peak)
        out["peak_run"] = peak
        rate = round(0.5 * peak["full"]["emails_per_s"], 1)
        print(f"peak (full path, closed loop): {peak['full']['emails_per_s']}/s -> open loop at {rate}/s")
    else:
        rate = float(args.rate)
    sampler = LoadSampler()
    sampler.start()
    run = run_ours(options(args), python, rate=rate)
    run["load"] = sampler.finish()
    out["open_loop_run"] = run
    print_ours(run)
    print_open_loop(run)
    out["ok"] = run["ok"] and out.get("peak_run", {"ok": True})["ok"]
    return out


def print_open_loop(r: dict[str, Any]) -> None:
    ol = r["open_loop"]
    print(
        f"open loop: {r['n']} commands at {ol['rate']}/s (achieved {ol['achieved_rate']}/s, sender at worst "
        f"{ol['sender_max_lag_ms']} ms late), {r['workers']} worker process(es); load average mean "
        f"{r['load']['mean']}, max {r['load']['max']}"
    )
    for path in ("accept", "full"):
        for start in ("from_received", "from_sent"):
            f = ol[path][start]
            print(
                f"  {path:6} {start.replace('_', ' '):14} p50 {f['lat_p50_ms']:8.1f} ms  "
                f"p99 {f['lat_p99_ms']:8.1f} ms  max {f['lat_max_ms']:8.1f} ms"
            )


# ------------------------------------------------------------------ output


def print_ours(r: dict[str, Any]) -> None:
    print(
        f"Emailer ({r['mode'].replace('_', ' ')}, subscriber: {r.get('subscriber', 'queue')}), {r['date']}: "
        f"N={r['n']} SendEmail "
        f"(~{r['command_bytes']} B), "
        f"{r['workers']} worker process(es), prefetch {r['prefetch']}, batch {r['batch_size']}"
        + "".join(f", {k}={v}" for k, v in r.get("settings", {}).items())
    )
    for name in ("accept", "full"):
        p = r[name]
        print(
            f"  {name + ' path:':13}{p['emails_per_s']:8.1f} emails/s  p50 {p['lat_p50_ms']:7.1f} ms  "
            f"p99 {p['lat_p99_ms']:7.1f} ms   (command received -> {p['until']}, {p['elapsed_s']:.2f} s)"
        )
    units = {"handle_batch": "msgs", "provider.send": "calls", "provider.send_many": "emails"}
    print("  worker time, all processes (publish and provider calls happen inside handle_batch):")
    for seam, t in r["worker_time"].items():
        each = 1e3 * t["s"] / max(1, t["items"])
        unit = units.get(seam, "messages")
        print(f"    {seam:24}{t['s']:7.2f} s {t['calls']:6} calls {t['items']:6} {unit:9} {each:6.2f} ms")
    cpu = r["cpu"]
    groups = cpu.get("by_group", {})
    print(
        f"  cpu (% of one core): worker processes {cpu['worker_processes']}, "
        f"sandbox {cpu.get('sandbox_process', '?')}, rabbitmq {groups.get('rabbitmq', '?')}, "
        f"postgres {groups.get('postgres', '?')}, other python {cpu.get('other_python', '?')}; "
        f"machine busy {groups.get('machine_busy_pct_of_all_cores', '?')} % of "
        f"{groups.get('cores', os.cpu_count())} cores"
    )
    c, n = r["check"], r["n"]
    where = "taken by the subscriber" if r.get("subscriber") == "consume" else "on subscriber queue"
    print(
        f"  checks: emails in DB {c['emails_in_db']}/{n} "
        f"(accepted {c['email_statuses'].get('accepted', 0)}), "
        f"sandbox accepted {c['sandbox_accepted']}/{n} ({c['sandbox_distinct_emails']} distinct), "
        f"outbox pending {c['outbox_pending']}, events {where} "
        f"{c['events_on_subscriber_queue']}/{2 * n}, error queue {c['error_queue']}"
        f" -> {'OK' if r['ok'] else 'FAILED'}"
    )


def print_baseline(b: dict[str, Any]) -> None:
    groups = b.get("cpu") or {}
    print(
        f"  baseline raw_pipeline ({b['variant']}): {b['msgs_per_s']:8.1f} msgs/s  "
        f"p50 {b['lat_p50_ms']:7.1f} ms  "
        f"p99 {b['lat_p99_ms']:7.1f} ms (callback entry -> ack); machine busy "
        f"{groups.get('machine_busy_pct_of_all_cores', '?')} %"
    )


def extras_before(args: argparse.Namespace, python: str, result: dict[str, Any]) -> None:
    if args.no_sandbox_capacity:
        return
    import sandbox_capacity

    result["sandbox_capacity"] = passes = sandbox_capacity.measure(python, 2000, [1, 8])
    for p in passes:
        print(f"sandbox capacity, alone: {sandbox_capacity.describe(p)}")
    print()


def extras_after(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if not args.scheduler:
        return
    import scheduler_cycle

    result["scheduler_cycle"] = cycles = scheduler_cycle.measure([1000, 100000], 200)
    for c in cycles:
        print(f"scheduler cycle: {scheduler_cycle.describe(c)}")


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace, python: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "emailer_throughput_invocation",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "cores": os.cpu_count(),
    }
    if not args.no_celery and args.rate is None and not celery_available():
        print("note: Celery is not installed (pip install -e '.[bench]'): no Celery peer", file=sys.stderr)
    extras_before(args, python, result)
    if args.rate is not None:
        result.update(run_open_loop(args, python))
    else:
        rounds = [one_round(args, python, i + 1) for i in range(args.rounds)]
        result["rounds"] = rounds
        result["summary"] = summary = summarize(rounds)
        result["ok"] = all(r["ok"] for r in rounds)
        print_summary(args, rounds, summary)
    extras_after(args, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ignored = sorted(k for k in os.environ if k.startswith("EMAILER_"))
    for name in ignored:  # the benchmark configures Emailer (and the sandbox) itself
        del os.environ[name]
    if ignored:
        print(f"note: ignoring {', '.join(ignored)}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup runs

    from emailer.entrypoints.logging import configure

    configure("WARNING", "json")
    try:
        result = run(args, venv_python())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
