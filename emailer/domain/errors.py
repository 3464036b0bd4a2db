"""Errors the domain raises when a rule is broken."""


class DomainError(Exception):
    """A rule of the domain was broken; the message says which."""


class IllegalTransition(DomainError):
    """The email cannot go from its current state to the one asked for."""
