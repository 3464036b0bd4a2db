"""Errors the domain raises when a rule is broken."""


class DomainError(Exception):
    """A rule of the domain was broken; the message says which."""


class IllegalTransition(DomainError):
    """The email cannot go from its current state to the one asked for."""


class EmailIdReused(DomainError):
    """A SendEmail re-used an email id for a different email: the first one stands, this one is refused."""

    def __init__(self, email_id: str, stored_hash: str, given_hash: str) -> None:
        super().__init__(
            f"email_id {email_id} was already used for a different email "
            f"(content hash {_short(stored_hash)} stored, {_short(given_hash)} given); "
            "re-send the same content, or use a new email_id"
        )
        self.email_id = email_id
        self.stored_hash = stored_hash
        self.given_hash = given_hash


def _short(content_hash: str) -> str:
    """A hash as people read it in a reason: the first 12 hex digits (``v1:`` prefix dropped)."""
    return content_hash.partition(":")[2][:12] or content_hash[:12]
