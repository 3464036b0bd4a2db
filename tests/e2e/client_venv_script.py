"""Run by the interpreter of a virtual environment holding only ``emailer-client``.

``python client_venv_script.py ARGS_JSON``: one ``send_and_wait``, then N
concurrent ones from threads of this one process; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from emailer_client import Emailer

from contracts import Address, EmailDeliveryFailed, EmailDeliveryStarted, SendEmail


def command(tag: str) -> SendEmail:
    return SendEmail(
        email_id=f"{tag}-{uuid.uuid4().hex[:12]}",
        from_=Address(email="shop@example.com"),
        to=[Address(email="ann@example.com")],
        subject="Your order",
        text="Thanks!",
    )


def main() -> None:
    args = json.loads(sys.argv[1])
    importable = []
    for name in ("emailer", "handlers", "sqlalchemy", "fastapi"):
        try:
            __import__(name)
            importable.append(name)
        except ImportError:
            pass
    with Emailer(args["bus_url"], endpoint=args["endpoint"], events_exchange=args["exchange"]) as emailer:
        first = command("one")
        event = emailer.send_and_wait(
            first, EmailDeliveryStarted | EmailDeliveryFailed, timeout=60, correlation_id="venv-1"
        )
        single = {"type": event.type_name(), "email_id": event.email_id, "expected": first.email_id}

        def one(index: int) -> tuple[str, str, str]:
            sent = command(f"many{index}")
            got = emailer.send_and_wait(sent, EmailDeliveryStarted | EmailDeliveryFailed, timeout=120)
            return sent.email_id, got.email_id, got.type_name()

        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=args["concurrent"]) as pool:
            results = list(pool.map(one, range(args["concurrent"])))
        print(json.dumps({
            "importable": importable, "single": single, "results": results,
            "concurrent_seconds": round(time.monotonic() - began, 2),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
