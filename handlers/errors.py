"""Errors a handler raises when a message cannot be handled as it stands."""


class InvalidMessage(Exception):
    """The message is wrong in itself: retrying cannot help, it goes to the error queue."""


class ConcurrencyConflict(Exception):
    """Someone else changed the aggregate since it was loaded; retry on fresh state."""
