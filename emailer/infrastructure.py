"""Infrastructure failures, told apart from failures of a message, in one place.

A database, broker or object store that does not answer says nothing about the
message being handled: the gateway answers 503 for it, and the worker pauses
consumption and tries the same messages again later, without spending any of
their retries (``emailer.endpoint.recoverability``). Everything else a handler
raises is the message's own failure and goes through recoverability.

This module sits below the gateway and the endpoint and imports no adapter:
bus errors are recognised by ``ConnectionError`` (``BusUnavailable`` is one),
by ``InfrastructureError`` (the base of the bus adapter's own errors) or by the
kombu / py-amqp module they come from.
"""

from __future__ import annotations

DATABASE = "database"
BROKER = "broker"
OBJECT_STORE = "object store"
NETWORK = "network"


class InfrastructureError(Exception):
    """Base for errors an adapter raises when its service does not answer or refuses the connection."""


class InfrastructureUnavailable(Exception):
    """Raised by the pipeline to its consumer: a dependency is down, pause and hand the same messages again.

    The deliveries the batch left unsettled are neither acked nor requeued: the
    consumer keeps them, backs off and hands them over again.
    """

    def __init__(self, dependency: str, cause: BaseException) -> None:
        from emailer.redaction import describe

        super().__init__(f"the {dependency} is unavailable: {describe(cause)}")
        self.dependency = dependency
        self.cause = cause


def unavailable_dependency(exc: BaseException) -> str | None:
    """``database``, ``broker`` or ``object store`` if ``exc`` means that one is not answering, else None."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from handlers.ports import BlobStoreUnavailable

    if isinstance(exc, BlobStoreUnavailable):
        return OBJECT_STORE
    if isinstance(exc, OperationalError | PoolTimeout):
        return DATABASE
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DATABASE
    if isinstance(exc, InfrastructureError | ConnectionError) or _from_bus(exc):
        return BROKER  # BusUnavailable is a ConnectionError; a handler reaches no other server directly
    if isinstance(exc, TimeoutError):
        return NETWORK
    return None


def is_infrastructure_failure(exc: BaseException) -> bool:
    return unavailable_dependency(exc) is not None


def _from_bus(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("amqp", "kombu", "emailer.adapters.bus"))
