"""An NServiceBus endpoint's side of the wire, from Particular's documentation, for the tests to play it.

Sources (docs.particular.net and the transport's code, NServiceBus.RabbitMQ):
* "Message Headers": the headers of a Send (snippet HeaderWriterSend, NServiceBus 9):
  ``$.diagnostics.originating.hostid``, ``NServiceBus.ContentType``, ``.ConversationId``,
  ``.CorrelationId`` (= the message id for a message sent outside a handler),
  ``.EnclosedMessageTypes`` (assembly-qualified), ``.MessageId``, ``.MessageIntent``,
  ``.OriginatingEndpoint``, ``.OriginatingMachine``, ``.ReplyToAddress``, ``.TimeSent``, ``.Version``.
* "System.Text.Json Serializer": content type ``application/json``; System.Text.Json writes the C#
  property names as declared (PascalCase), every property including nulls, no whitespace.
* RabbitMQ transport, ``BasicPropertiesExtensions.Fill``: AMQP message-id, persistent, every header
  as a string header, correlation-id from ``NServiceBus.CorrelationId``, type from
  ``NServiceBus.EnclosedMessageTypes`` up to the first comma, content-type from
  ``NServiceBus.ContentType``, reply-to from ``NServiceBus.ReplyToAddress``.
* "Routing topology": conventional sends publish to the destination's fanout exchange (routing key
  ``""``, mandatory); direct sends publish to the default exchange with the queue's name.
"""

from __future__ import annotations

import json
from typing import Any

SENDER = "Shop.Orders"
MESSAGE_ID = "982d3269-24ca-41cd-9d86-ae45015f3f38"
CONVERSATION_ID = "bf0498cf-1ecc-4cdd-8245-ae45015f3f38"


def send_email_body(email_id: str) -> bytes:
    """A SendEmail as System.Text.Json serializes a C# class with these properties (nulls included)."""
    message: dict[str, Any] = {
        "EmailId": email_id,
        "From": {"Email": "orders@example.com", "Name": "Shop"},
        "ReplyTo": None,
        "To": [{"Email": "ann@example.com", "Name": "Ann"}],
        "Cc": None,
        "Bcc": [],
        "Subject": "Your order shipped",
        "Text": "It is on its way.",
        "Html": None,
        "TemplateId": None,
        "TemplateData": None,
        "Attachments": [],
        "Headers": {},
        "Categories": ["orders"],
        "Metadata": {"OrderId": "1234"},
        "SendAt": None,
    }
    return json.dumps(message, separators=(",", ":")).encode()


def send_headers(namespace: str, message_id: str = MESSAGE_ID) -> dict[str, str]:
    """The headers of a Send from an NServiceBus 9 endpoint, as documented (values of our own)."""
    return {
        "$.diagnostics.originating.hostid": "5fc2d3fe172c2602b7e1b665f355aa9d",
        "NServiceBus.ContentType": "application/json",
        "NServiceBus.ConversationId": CONVERSATION_ID,
        "NServiceBus.CorrelationId": message_id,
        "NServiceBus.EnclosedMessageTypes": (
            f"{namespace}.SendEmail, {namespace}, Version=1.0.0.0, Culture=neutral, PublicKeyToken=null"
        ),
        "NServiceBus.MessageId": message_id,
        "NServiceBus.MessageIntent": "Send",
        "NServiceBus.OriginatingEndpoint": SENDER,
        "NServiceBus.OriginatingMachine": "MACHINENAME",
        "NServiceBus.ReplyToAddress": SENDER,
        "NServiceBus.TimeSent": "2026-11-28 10:18:51:063736 Z",
        "NServiceBus.Version": "9.2.7",
    }


def amqp_properties(headers: dict[str, str]) -> dict[str, Any]:
    """The AMQP properties the transport fills from those headers."""
    return {
        "message_id": headers["NServiceBus.MessageId"],
        "delivery_mode": 2,
        "correlation_id": headers["NServiceBus.CorrelationId"],
        "type": headers["NServiceBus.EnclosedMessageTypes"].split(",", 1)[0],
        "content_type": headers["NServiceBus.ContentType"],
        "reply_to": headers["NServiceBus.ReplyToAddress"],
    }
