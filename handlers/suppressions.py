"""The suppression list at work: who a new email does not go to, and which reports add an address.

The rules are the domain's (``emailer.domain.suppression``); these functions
connect them to the unit of work's ``suppressions`` store.
"""

from __future__ import annotations

from datetime import datetime

from contracts import DeliveryReport
from emailer.domain import Email
from emailer.domain.suppression import suppression_for
from handlers.ports import Suppressions


def leave_out_suppressed(email: Email, suppressions: Suppressions, now: datetime) -> int:
    """Fail the recipients of a new email whose address is listed; how many were left out."""
    listed = suppressions.find(r.address for r in email.recipients)
    return email.suppress(listed, now) if listed else 0


def list_if_suppressing(report: DeliveryReport, suppressions: Suppressions, now: datetime) -> bool:
    """Add the recipient of a hard bounce, complaint or unsubscribe to the list; True if newly listed."""
    entry = suppression_for(report, now)
    return entry is not None and suppressions.add(entry)
