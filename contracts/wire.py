"""The wire format around a message body: NServiceBus header names, their time format, type names.

These are part of the contract: a service that sends Emailer a command (or
reads its events) sets and reads these headers. They are defined here once and
used by the handlers, the bus adapter and the error queue alike.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

ENDPOINT = "emailer"
"""Emailer's endpoint name: its input queue, ``OriginatingEndpoint`` and ``ReplyToAddress``."""


class H:
    """Header names: NServiceBus's, and Emailer's own (``Emailer.*``) where NServiceBus has none.

    The recoverability headers below are the agreement between the worker that
    writes them and the tools that read them (``emailer errors``, ServicePulse-like
    consoles); README "Operations: retries and the error queue" describes them.
    """

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
    HANDLER = "Emailer.Handler"
    """On a failed message: the handler that raised (``handlers.send_email.send_email``); absent when
    the message never reached one (it could not be decoded, or failed the contract)."""
    # Retry counts: on a message being retried, and kept on its copy in the error queue.
    RETRIES = "NServiceBus.Retries"
    """Delayed retries performed (NServiceBus's meaning); on an error-queue copy: how many were spent."""
    RETRIES_TIMESTAMP = "NServiceBus.Retries.Timestamp"
    """When the latest delayed retry was scheduled (wire time), as NServiceBus sets it."""
    IMMEDIATE_RETRIES = "Emailer.ImmediateRetries"
    """Immediate retries performed (NServiceBus keeps this count in memory; Emailer carries it so that it
    survives a crash); on an error-queue copy: how many were spent."""


RETRY_HEADERS = (H.RETRIES, H.RETRIES_TIMESTAMP, H.IMMEDIATE_RETRIES)
"""What recoverability adds to a message while it is retried: a replay removes them (a fresh budget)."""
FAILURE_HEADERS = (
    H.FAILED_Q,
    H.TIME_OF_FAILURE,
    H.EXCEPTION_TYPE,
    H.EXCEPTION_MESSAGE,
    H.EXCEPTION_SOURCE,
    H.EXCEPTION_STACK_TRACE,
    H.PROCESSING_ENDPOINT,
    H.HANDLER,
)
"""What moving a message to the error queue adds: a replay removes them (with ``RETRY_HEADERS``)."""


@functools.lru_cache(maxsize=256)
def wire_time(moment: datetime) -> str:
    """NServiceBus's date format on the wire: ``yyyy-MM-dd HH:mm:ss:ffffff Z`` in UTC.

    Remembered for the latest moments: the messages of one transaction share its time,
    and a batch of 1,000 reports formatted the same moment about 1,000 times.
    """
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined UTC time")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S:%f Z")


def type_name(enclosed: str) -> str:
    """The bare type name in an ``EnclosedMessageTypes`` value (or an AMQP ``type`` property).

    ``SendEmail``, ``contracts.SendEmail`` and NServiceBus's
    ``Contracts.SendEmail, Contracts, Version=1.0.0.0;Contracts.IBase, ...`` all give ``SendEmail``.
    """
    return enclosed.split(";", 1)[0].split(",", 1)[0].strip().rsplit(".", 1)[-1]
