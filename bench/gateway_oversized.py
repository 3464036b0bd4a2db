"""Peak RSS of a gateway receiving four oversized bodies at once (issue 6, item 6).

Starts ``emailer run --port 0`` (embedded defaults, a throw-away ``var/``),
then, for each round, resets the process's peak RSS (``/proc/PID/clear_refs``),
sends four bodies of ``--mb`` MB at the same time and prints the status codes
and the peak RSS (``VmHWM``) before and after. Rounds: the bodies declared with
``Content-Length``, then streamed chunked (no length, so the gateway must count
as it reads). ``--max-body-bytes`` sets ``EMAILER_GATEWAY_MAX_BODY_BYTES``
(default: the gateway's own default); a huge value shows what the limit saves.

    .venv/bin/python bench/gateway_oversized.py
    .venv/bin/python bench/gateway_oversized.py --max-body-bytes 1000000000   # no real limit

Linux only (``/proc``). Traffic goes to loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHUNK = 1024 * 1024
_URL = re.compile(r"API\s+http://([\d.]+):(\d+)")


def vm(pid: int, field: str) -> int:
    """``VmHWM`` / ``VmRSS`` of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS


def post(host: str, port: int, size: int, declare_length: bool, results: list[str]) -> None:
    """POST ``size`` bytes (a JSON string body) streamed in 1 MB chunks; stop when the answer comes."""
    head = [b"POST /v1/emails HTTP/1.1", f"Host: {host}:{port}".encode(), b"Content-Type: application/json"]
    head.append(f"Content-Length: {size}".encode() if declare_length else b"Transfer-Encoding: chunked")
    body = b"a" * CHUNK
    status = "no answer"
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        sent = 0
        try:
            while sent < size:
                if select.select([sock], [], [], 0)[0]:
                    break  # the gateway answered before the body was complete
                part = body[: min(CHUNK, size - sent)]
                sock.sendall(part if declare_length else b"%x\r\n%s\r\n" % (len(part), part))
                sent += len(part)
            else:
                if not declare_length:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096).decode("latin-1")
            status = answer.split(" ", 2)[1] if answer.startswith("HTTP/") else f"odd answer {answer[:40]!r}"
        except OSError as exc:
            status = f"{type(exc).__name__}"
    results.append(f"{status} (sent {sent // CHUNK} MB)")


def round_(pid: int, host: str, port: int, size: int, declare_length: bool) -> None:
    reset_peak(pid)
    before = vm(pid, "VmHWM")
    results: list[str] = []
    threads = [
        threading.Thread(target=post, args=(host, port, size, declare_length, results)) for _ in range(4)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    kind = "Content-Length" if declare_length else "chunked, no length"
    print(f"4 x {size // CHUNK} MB, {kind}: statuses {sorted(results)}")
    print(f"  peak RSS before {before} MB, after {vm(pid, 'VmHWM')} MB (RSS now {vm(pid, 'VmRSS')} MB), "
          f"{elapsed:.1f}s")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=50, help="size of each body in MB (default 50)")
    parser.add_argument("--max-body-bytes", type=int, help="EMAILER_GATEWAY_MAX_BODY_BYTES for the gateway")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emailer-bench-") as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
        env.update({"EMAILER_VAR_DIR": str(Path(workdir) / "var"), "EMAILER_LOG_FORMAT": "json"})
        if args.max_body_bytes:
            env["EMAILER_GATEWAY_MAX_BODY_BYTES"] = str(args.max_body_bytes)
        process = subprocess.Popen(
            [sys.executable, "-m", "emailer.entrypoints.cli", "run", "--port", "0"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 60
            found = None
            while found is None and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    raise SystemExit(f"emailer run exited: {process.wait()}")
                found = _URL.search(line)
            if found is None:
                raise SystemExit("emailer run printed no API URL within 60 s")
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            host, port = found.group(1), int(found.group(2))
            limit = args.max_body_bytes or "default"
            print(f"gateway pid {process.pid} at {host}:{port}, max body bytes: {limit}")
            print(f"  at rest: peak RSS {vm(process.pid, 'VmHWM')} MB, RSS {vm(process.pid, 'VmRSS')} MB")
            for declare_length in (True, False):
                round_(process.pid, host, port, args.mb * CHUNK, declare_length)
        finally:
            process.terminate()
            process.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
