"""Peak RSS growth and seconds for a 20 MB attachment, uploaded to the gateway then dispatched (issue 9).

Two phases, each in a fresh ``emailer run --port 0`` (embedded defaults: in-memory
bus, SQLite and the local blob store under one throw-away ``var/``, shared by both
phases) with ``EMAILER_PROVIDER=sendgrid`` pointed at ``emailer sandbox`` running
as its own process:

1. **upload**: ``POST /v1/attachments`` with ``--mb`` MB of random bytes, streamed
   by the client in 1 MiB chunks with a ``Content-Length``. Measured: the gateway
   process, from the request to the 201.
2. **dispatch**: ``POST /v1/emails`` with the reference the upload answered,
   then waiting (bounded) until ``GET /v1/emails/{id}`` says ``accepted``: the
   reference checked at acceptance (the blob read through sha256), the SendGrid
   request built and sent to the sandbox, which parses and checks it as SendGrid
   would. Measured: the process that runs the worker, from the POST to ``accepted``.

Before each measured step the process has done the same step once with a 64 KiB
file (imports, connection pools, first-call caches), then its peak RSS is reset
to its current RSS (``/proc/PID/clear_refs``); the figure is ``VmHWM`` after the
step minus ``VmRSS`` before it, also shown as a multiple of the file's size.
Each phase runs in its own process so that memory one phase's allocator kept is
not reused (and hidden) by the other.

    .venv/bin/python bench/attachments.py              # 20 MB (20 MiB)
    .venv/bin/python bench/attachments.py --mb 5 --runs 3
    .venv/bin/python bench/attachments.py --provider file   # the .eml provider instead

Linux only (``/proc``). No servers needed; traffic goes to loopback only. Which
copy of Emailer runs is printed (``PYTHONPATH`` points at another checkout to
measure it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import BenchError, Sandbox, stop_process  # noqa: E402

MIB = 1024 * 1024
WARM_UP_BYTES = 64 * 1024
_URL = re.compile(r"API\s+(http://[\d.]+:\d+)")


# ----------------------------------------------------------------- /proc


def vm_kib(pid: int, field: str) -> int:
    """``VmHWM`` / ``VmRSS`` of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS


@dataclass(frozen=True)
class Measure:
    name: str
    size: int
    rss_before_kib: int
    peak_kib: int
    seconds: float

    @property
    def growth_bytes(self) -> int:
        return (self.peak_kib - self.rss_before_kib) * 1024

    def line(self) -> str:
        before, peak, growth = self.rss_before_kib / 1024, self.peak_kib / 1024, self.growth_bytes / MIB
        return (
            f"  {self.name:<9} RSS before {before:7.1f} MiB, peak {peak:7.1f} MiB: growth {growth:6.1f} MiB"
            f" = {self.growth_bytes / self.size:4.2f}x the file, {self.seconds:6.2f} s"
        )


def measured(pid: int, name: str, size: int, step: Any) -> tuple[Measure, Any]:
    reset_peak(pid)
    before = vm_kib(pid, "VmRSS")
    started = time.monotonic()
    result = step()
    seconds = time.monotonic() - started
    return Measure(name, size, before, vm_kib(pid, "VmHWM"), seconds), result


# ----------------------------------------------------------------- processes


class Emailer:
    """``emailer run --port 0`` as a child process; its output goes to a log file."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str) -> None:
        self.log_path = workdir / f"emailer-{label}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emailer.entrypoints.cli", "run", "--port", "0"],
            cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = self._wait_listening(60.0)
        self.http = httpx.Client(base_url=self.url, timeout=120.0)

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _URL.search(self.log_path.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        output = self.log_path.read_text()[-3000:]
        raise BenchError(f"emailer run did not come up within {timeout}s:\n{output}")

    def upload(self, size: int, filename: str) -> dict[str, Any]:
        response = self.http.post(
            "/v1/attachments",
            params={"filename": filename, "content_type": "application/octet-stream"},
            content=_random_chunks(size),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        if response.status_code != 201:
            raise BenchError(f"upload answered {response.status_code}: {response.text[:300]}")
        reference: dict[str, Any] = response.json()
        return reference

    def send_and_wait(self, reference: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        email_id = f"bench-{uuid.uuid4().hex[:12]}"
        command = {
            "email_id": email_id,
            "from": {"email": "shop@example.com"},
            "to": [{"email": "ada@example.com"}],
            "subject": "A large attachment",
            "text": "See the attachment.",
            "attachments": [reference],
        }
        response = self.http.post("/v1/emails", json=command)
        if response.status_code != 202:
            raise BenchError(f"POST /v1/emails answered {response.status_code}: {response.text[:300]}")
        deadline = time.monotonic() + timeout
        while True:
            view: dict[str, Any] = self.http.get(f"/v1/emails/{email_id}").json()
            if view.get("status") in ("accepted", "failed", "cancelled"):
                break
            if time.monotonic() >= deadline:
                raise BenchError(f"email {email_id} not accepted within {timeout}s: {view.get('status')}")
            time.sleep(0.02)
        if view["status"] != "accepted":
            raise BenchError(f"email {email_id} ended {view['status']}: {view.get('last_error')}")
        return view

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        stop_process(self.proc)
        self._log.close()


def _random_chunks(size: int) -> Iterator[bytes]:
    block = secrets.token_bytes(MIB)  # incompressible; a new block every MiB so no two MiB are alike
    sent = 0
    while sent < size:
        part = block[: min(MIB, size - sent)]
        yield part
        sent += len(part)
        block = secrets.token_bytes(MIB)


# ----------------------------------------------------------------- phases


def upload_phase(workdir: Path, env: dict[str, str], size: int) -> tuple[Measure, dict[str, Any]]:
    emailer = Emailer(workdir, env, "upload")
    try:
        emailer.upload(WARM_UP_BYTES, "warm-up.bin")
        return measured(emailer.proc.pid, "upload", size, lambda: emailer.upload(size, "large.bin"))
    finally:
        emailer.stop()


def dispatch_phase(workdir: Path, env: dict[str, str], size: int, reference: dict[str, Any]) -> Measure:
    emailer = Emailer(workdir, env, "dispatch")
    try:
        emailer.send_and_wait(emailer.upload(WARM_UP_BYTES, "warm-up.bin"))
        measure, _ = measured(emailer.proc.pid, "dispatch", size, lambda: emailer.send_and_wait(reference))
        return measure
    finally:
        emailer.stop()


def which_emailer(workdir: Path, env: dict[str, str]) -> str:
    """Where the processes import Emailer from (they run in ``workdir``, as ``emailer run`` does)."""
    code = "import emailer, os; print(os.path.dirname(os.path.dirname(emailer.__file__)))"
    found = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True)
    return found.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=20, help="size of the attachment in MiB (default 20)")
    parser.add_argument("--runs", type=int, default=1, help="how many times to run both phases (default 1)")
    parser.add_argument(
        "--provider", choices=["sendgrid", "file"], default="sendgrid",
        help="sendgrid (against the sandbox, the default) or file (the .eml provider)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="append each run's figures to this file as one JSON line")
    args = parser.parse_args()
    size = int(args.mb * MIB)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="emailer-bench-attachments-") as tmp:
        workdir = Path(tmp)
        api_key = f"SG.{secrets.token_urlsafe(24)}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
        sandbox = Sandbox(sys.executable, workdir, {**base_env, "EMAILER_SANDBOX_API_KEY": api_key})
        try:
            env = {
                **base_env,
                "EMAILER_VAR_DIR": str(workdir / "var"),
                "EMAILER_LOG_FORMAT": "json",
                "EMAILER_PROVIDER": args.provider,
                "EMAILER_SENDGRID_API_KEY": api_key,
                "EMAILER_SENDGRID_BASE_URL": sandbox.url,
            }
            source = which_emailer(workdir, env)
            where = f"against the sandbox at {sandbox.url}" if args.provider == "sendgrid" else "(.eml files)"
            print(f"Emailer from {source}; attachment {size} bytes ({size / MIB:.1f} MiB), "
                  f"{args.provider} provider {where}")  # fmt: skip
            for run in range(args.runs):
                upload, reference = upload_phase(workdir, env, size)
                dispatch = dispatch_phase(workdir, env, size, reference)
                print(f"run {run + 1}:")
                print(upload.line())
                print(dispatch.line())
                if args.json is not None:
                    with args.json.open("a") as out:
                        figures: dict[str, float | str] = {"size": size, "provider": args.provider}
                        for m in (upload, dispatch):
                            figures[f"{m.name}_growth_x"] = round(m.growth_bytes / size, 3)
                            figures[f"{m.name}_seconds"] = round(m.seconds, 3)
                        out.write(json.dumps(figures) + "\n")
                failures += upload.growth_bytes >= size  # target: under 1x
                failures += dispatch.growth_bytes >= 3 * size  # target: under 3x (1.5x is the goal)
            print("targets: upload growth < 1x the file, dispatch growth < 3x (goal 1.5x) -> "
                  + ("OK" if failures == 0 else f"{failures} figure(s) over"))  # fmt: skip
        finally:
            sandbox.stop()
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
