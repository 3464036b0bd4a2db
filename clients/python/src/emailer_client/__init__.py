"""emailer-client: send commands to Emailer over RabbitMQ, wait for its events, subscribe to them.

    from emailer_client import Emailer
    from contracts import SendEmail, EmailDeliveryStarted, EmailDeliveryFailed

    with Emailer("amqp://guest:guest@localhost//") as emailer:
        event = emailer.send_and_wait(SendEmail(...), EmailDeliveryStarted | EmailDeliveryFailed)
"""

from emailer_client.client import Emailer, Expectation, WaitTimeout
from emailer_client.dedupe import DedupeStore, MemoryDedupeStore, SqliteDedupeStore
from emailer_client.subscription import Subscription

__all__ = [
    "DedupeStore",
    "Emailer",
    "Expectation",
    "MemoryDedupeStore",
    "SqliteDedupeStore",
    "Subscription",
    "WaitTimeout",
]
