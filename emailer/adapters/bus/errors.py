"""Errors the bus adapter raises (callers never need to import kombu or amqp to catch them)."""

from __future__ import annotations

from emailer.infrastructure import InfrastructureError


class BusError(InfrastructureError):
    """Something went wrong on the bus."""


class BusUnavailable(BusError, ConnectionError):
    """The broker cannot be reached (after the bounded retries).

    ``url`` never carries the password: it is kombu's masked ``as_uri()``.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"message broker {url} unavailable: {reason}")
        self.url = url
        self.reason = reason


class PublishFailed(BusError):
    """The broker refused a publish (e.g. a missing exchange): the message is not on the bus."""


class PublishNotConfirmed(PublishFailed):
    """The broker nacked a message: it is not safely on the bus."""


class DeliveryAlreadySettled(RuntimeError):
    """A delivery was acked or requeued twice."""
