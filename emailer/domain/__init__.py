"""The Email aggregate and its rules: plain Python, no framework, no I/O."""

from emailer.domain.errors import DomainError, IllegalTransition
from emailer.domain.model import Email, Recipient, TimelineEntry
from emailer.domain.retry import RetryPolicy
from emailer.domain.status import EmailStatus, RecipientStatus

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
