"""Another service's side of Emailer, with kombu: send SendEmail, subscribe to the events.

Run it against an Emailer worker on RabbitMQ:
    python examples/kombu_client.py amqp://guest:guest@localhost:5672//
"""

import sys
import uuid

from kombu import Connection, Exchange, Queue

URL = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@localhost:5672//"
events = Exchange("emailer.events", type="topic", durable=True)
# Your service's own durable queue, bound to the events it cares about ("#" for all of them).
my_queue = Queue("billing.email-events", events, routing_key="#", durable=True)
email_id = f"order-{uuid.uuid4().hex[:8]}-shipped"


def on_event(body: dict, message) -> None:  # type: ignore[no-untyped-def]
    kind = message.headers["NServiceBus.EnclosedMessageTypes"]
    print(kind, body["email_id"], "correlation:", message.headers["NServiceBus.CorrelationId"])
    message.ack()  # dedupe on message.headers["NServiceBus.MessageId"]: it is stable


with Connection(URL) as conn, conn.Consumer(my_queue, callbacks=[on_event]):  # declares + binds the queue
    message_id = str(uuid.uuid4())
    conn.Producer().publish(
        {
            "email_id": email_id,  # your idempotency key: re-sending it sends nothing new
            "from": {"email": "shop@example.com", "name": "Shop"},
            "to": [{"email": "ann@example.com"}],
            "subject": "Your order has shipped",
            "text": "It is on its way.",
            "metadata": {"order": "1234"},  # echoed back on every event
        },
        serializer="json",
        exchange="",
        routing_key="emailer",  # Emailer's input queue
        delivery_mode=2,
        message_id=message_id,
        headers={
            "NServiceBus.MessageId": message_id,
            "NServiceBus.EnclosedMessageTypes": "SendEmail",
            "NServiceBus.CorrelationId": "checkout-77",
        },
    )
    seen = 0
    while seen < 2:  # EmailQueued, then EmailDeliveryStarted
        conn.drain_events(timeout=30)
        seen += 1
