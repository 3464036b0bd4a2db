"""A subscriber as its own process, for the kill test: ``python subscriber_process.py ARGS_JSON``.

Imports only ``emailer_client`` and ``contracts``. Mode ``hang``: the handler
notes that it started, then blocks (the test SIGKILLs it mid-handler). Mode
``work``: the handler appends the event's email id to the effects file.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from emailer_client import Emailer, SqliteDedupeStore

from contracts import EmailRecipientDelivered


def main() -> None:
    args = json.loads(sys.argv[1])
    effects = Path(args["effects"])
    started = Path(args["started"])

    def handle(event: EmailRecipientDelivered) -> None:
        with started.open("a") as f:
            f.write(event.email_id + "\n")
        if args["mode"] == "hang":
            threading.Event().wait()
        with effects.open("a") as f:
            f.write(event.email_id + "\n")

    emailer = Emailer(args["bus_url"], events_exchange=args["exchange"])
    store = SqliteDedupeStore(args["store"])
    with emailer.subscribe(args["queue"], {EmailRecipientDelivered: handle}, store=store) as subscription:
        print("subscribed", flush=True)
        subscription.run()


if __name__ == "__main__":
    main()
