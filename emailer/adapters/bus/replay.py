"""What a failed message looks like when it goes back: failure and retry headers off, same id (or an edit).

``is_failure_header`` is the one place that says which headers a failure or a
retry put on a message. It is tolerant of headers it does not know yet, the way
ServiceControl strips them: by prefix for NServiceBus's families
(``NServiceBus.ExceptionInfo.*``, ``NServiceBus.Retries*``, ...) and, for our
own ``Emailer.*`` headers, by what the name says (retry, attempt, delay,
handler, failure, exception, truncation). ``Emailer.Signature`` is kept: a
replay keeps the message id and the body, so the signature of an internal
command still verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from contracts.wire import H
from emailer.adapters.bus.failed import FailedMessage
from emailer.signing import SIGNATURE_HEADER
from handlers.ports import OutgoingMessage

EDIT_OF = "NServiceBus.EditOf"
"""On an edited message: the message id of the failed message it replaces."""

FAILURE_HEADER_PREFIXES = (
    "NServiceBus.ExceptionInfo.",
    "NServiceBus.Retries",  # NServiceBus.Retries, NServiceBus.Retries.Timestamp
    "NServiceBus.FLRetries",
    "NServiceBus.Timeout",  # timeout-manager headers of a delayed retry
    "NServiceBus.Processing",  # ProcessingEndpoint, ProcessingMachine, ProcessingStarted/Ended
    "$.diagnostics",
)
FAILURE_HEADER_NAMES = frozenset({H.FAILED_Q, H.TIME_OF_FAILURE, H.PROCESSING_ENDPOINT})
_EMAILER_FAILURE_WORDS = ("retr", "attempt", "delay", "handler", "fail", "exception", "error", "truncat")


class NotReplayable(ValueError):
    """The message cannot go back as it stands (no ``FailedQ`` to send it to)."""


def is_failure_header(name: str) -> bool:
    """Was this header put on by a failure or a retry (so a replay must take it off)?"""
    if name in FAILURE_HEADER_NAMES or name.startswith(FAILURE_HEADER_PREFIXES):
        return True
    lowered = name.lower()
    return lowered.startswith("emailer.") and any(word in lowered for word in _EMAILER_FAILURE_WORDS)


def cleaned(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without failure and retry headers (everything else untouched, in order)."""
    return {name: value for name, value in headers.items() if not is_failure_header(name)}


def replayed(message: FailedMessage) -> OutgoingMessage:
    """The message as it goes back to ``FailedQ``: same id, same body, failure headers off."""
    return OutgoingMessage(
        message_id=message.message_id,
        message_type=message.message_type,
        body=message.body,
        headers=cleaned(message.headers),
        intent="Send",
        destination=_destination(message),
        content_type=message.content_type,
    )


def edited(message: FailedMessage, body: bytes, new_id: str | None = None) -> OutgoingMessage:
    """The corrected message: a new message id, ``NServiceBus.EditOf`` naming the failed one.

    The signature is dropped: it signed the old id and body (internal commands
    are not edited; see the CLI).
    """
    message_id = new_id or str(uuid.uuid4())
    headers = cleaned(message.headers)
    headers.pop(SIGNATURE_HEADER, None)
    headers[H.MESSAGE_ID] = message_id
    headers[EDIT_OF] = message.message_id
    return OutgoingMessage(
        message_id=message_id,
        message_type=message.message_type,
        body=body,
        headers=headers,
        intent="Send",
        destination=_destination(message),
        content_type="application/json",
    )


def _destination(message: FailedMessage) -> str:
    if not message.failed_queue:
        name = message.id or message.message_id
        raise NotReplayable(f"{name} has no {H.FAILED_Q} header: nowhere to send it")
    return message.failed_queue
