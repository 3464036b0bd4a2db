"""The suppression list at work: who a new email does not go to, and which reports add an address.

The rules are the domain's (``emailer.domain.suppression``); these functions
connect them to the unit of work's ``suppressions`` store, and give the CLI and
the gateway their few operations on it.
"""

from __future__ import annotations

from datetime import datetime

from contracts import DeliveryReport
from emailer.domain import Email
from emailer.domain.suppression import Suppression, SuppressionReason, normalize, suppression_for
from handlers.ports import Suppressions
from handlers.unit_of_work import AbstractUnitOfWork


def leave_out_suppressed(email: Email, suppressions: Suppressions, now: datetime) -> int:
    """Fail the recipients of a new email whose address is listed; how many were left out."""
    listed = suppressions.find(r.address for r in email.recipients)
    return email.suppress(listed, now) if listed else 0


def list_if_suppressing(report: DeliveryReport, suppressions: Suppressions, now: datetime) -> bool:
    """Add the recipient of a hard bounce, complaint or unsubscribe to the list; True if newly listed."""
    entry = suppression_for(report, now)
    return entry is not None and suppressions.add(entry)


# ------------------------------------------------------------------ an operator's hand on the list


def add_by_hand(
    uow: AbstractUnitOfWork, address: str, note: str | None, now: datetime
) -> tuple[Suppression, bool]:
    """List ``address`` (reason ``manual``) unless listed: the entry as it stands, and whether it is new."""
    with uow:
        added = uow.suppressions.add(
            Suppression(normalize(address), SuppressionReason.MANUAL, now, detail=note)
        )
        [entry] = uow.suppressions.find([address])
        uow.commit()
    return entry, added


def remove_by_hand(uow: AbstractUnitOfWork, address: str) -> bool:
    """Take ``address`` off the list; True if it was listed."""
    with uow:
        removed = uow.suppressions.remove(address)
        uow.commit()
    return removed


def look_up(uow: AbstractUnitOfWork, address: str) -> Suppression | None:
    with uow:
        found = uow.suppressions.find([address])
    return found[0] if found else None


def list_page(uow: AbstractUnitOfWork, limit: int, after: str | None = None) -> list[Suppression]:
    with uow:
        return uow.suppressions.page(limit, after)
