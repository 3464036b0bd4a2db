"""The wire format around a message body: NServiceBus header names, their time format, type names.

These are part of the contract: a service that sends Emailer a command (or
reads its events) sets and reads these headers. They are defined here once and
used by the handlers, the bus adapter and the error queue alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

ENDPOINT = "emailer"
"""Emailer's endpoint name: its input queue, ``OriginatingEndpoint`` and ``ReplyToAddress``."""


class H:
    """NServiceBus header names."""

    MESSAGE_ID = "NServiceBus.MessageId"
    CORRELATION_ID = "NServiceBus.CorrelationId"
    CONVERSATION_ID = "NServiceBus.ConversationId"
    RELATED_TO = "NServiceBus.RelatedTo"
    ENCLOSED_MESSAGE_TYPES = "NServiceBus.EnclosedMessageTypes"
    MESSAGE_INTENT = "NServiceBus.MessageIntent"
    REPLY_TO_ADDRESS = "NServiceBus.ReplyToAddress"
    ORIGINATING_ENDPOINT = "NServiceBus.OriginatingEndpoint"
    PROCESSING_ENDPOINT = "NServiceBus.ProcessingEndpoint"
    TIME_SENT = "NServiceBus.TimeSent"
    CONTENT_TYPE = "NServiceBus.ContentType"
    # On a message moved to the error queue:
    FAILED_Q = "NServiceBus.FailedQ"
    TIME_OF_FAILURE = "NServiceBus.TimeOfFailure"
    EXCEPTION_TYPE = "NServiceBus.ExceptionInfo.ExceptionType"
    EXCEPTION_MESSAGE = "NServiceBus.ExceptionInfo.Message"
    EXCEPTION_SOURCE = "NServiceBus.ExceptionInfo.Source"
    EXCEPTION_STACK_TRACE = "NServiceBus.ExceptionInfo.StackTrace"


def wire_time(moment: datetime) -> str:
    """NServiceBus's date format on the wire: ``yyyy-MM-dd HH:mm:ss:ffffff Z`` in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined UTC time")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S:%f Z")


def type_name(enclosed: str) -> str:
    """The bare type name in an ``EnclosedMessageTypes`` value (or an AMQP ``type`` property).

    ``SendEmail``, ``contracts.SendEmail`` and NServiceBus's
    ``Contracts.SendEmail, Contracts, Version=1.0.0.0;Contracts.IBase, ...`` all give ``SendEmail``.
    """
    return enclosed.split(";", 1)[0].split(",", 1)[0].strip().rsplit(".", 1)[-1]
