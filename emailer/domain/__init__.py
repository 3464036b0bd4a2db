"""The Email aggregate and its rules: plain Python, no framework, no I/O."""

from emailer.domain.errors import DomainError, IllegalTransition
from emailer.domain.model import Email, EmailStatus, Recipient, RecipientStatus, TimelineEntry
from emailer.domain.retry import RetryPolicy

__all__ = [
    "DomainError",
    "Email",
    "EmailStatus",
    "IllegalTransition",
    "Recipient",
    "RecipientStatus",
    "RetryPolicy",
    "TimelineEntry",
]
