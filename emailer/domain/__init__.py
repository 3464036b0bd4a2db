"""The Email aggregate and its rules: plain Python, no framework, no I/O.

``email.py`` holds the aggregate and its transitions, ``recipient.py`` one
addressee's delivery state, ``reports.py`` how provider reports move a
recipient, ``values.py`` and ``outcome.py`` the value objects, ``messages.py``
the conversion to and from the public contracts, ``retry.py`` the backoff and
budget rules.
"""

from emailer.domain.aggregate import Aggregate
from emailer.domain.email import Email
from emailer.domain.errors import DomainError, EmailIdReused, IllegalTransition
from emailer.domain.outcome import Outcome, SendOutcome
from emailer.domain.recipient import Recipient
from emailer.domain.retry import RetryPolicy
from emailer.domain.status import EmailStatus, RecipientStatus
from emailer.domain.values import Attachment, Content, Mailbox, TimelineEntry

__all__ = [
    "Aggregate",
    "Attachment",
    "Content",
    "DomainError",
    "Email",
    "EmailIdReused",
    "EmailStatus",
    "IllegalTransition",
    "Mailbox",
    "Outcome",
    "Recipient",
    "RecipientStatus",
    "RetryPolicy",
    "SendOutcome",
    "TimelineEntry",
]
