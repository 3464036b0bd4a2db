"""RecordDeliveryReports: apply provider callbacks to their emails, once each."""

from __future__ import annotations

import structlog

from contracts import RecordDeliveryReports
from handlers.ports import Clock
from handlers.suppressions import list_if_suppressing
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


def record_delivery_reports(command: RecordDeliveryReports, uow: AbstractUnitOfWork, clock: Clock) -> None:
    for report in command.reports:
        if uow.provider_events.seen(report.provider, report.provider_event_id):
            continue
        uow.provider_events.record(report.provider, report.provider_event_id, report.email_id)
        now = clock.now()
        if list_if_suppressing(report, uow.suppressions, now):
            log.info("suppression.listed", email_id=report.email_id, reason=report.kind.value)
        email = uow.emails.get(report.email_id)
        if email is None:
            log.warning("delivery_report.unknown_email", email_id=report.email_id)
            continue
        email.apply_report(report, now)


def prefetch(commands: list[RecordDeliveryReports], uow: AbstractUnitOfWork) -> None:
    """A batch looks up its provider event ids and its emails in one round trip each."""
    reports = [r for c in commands for r in c.reports]
    uow.provider_events.claim((r.provider, r.provider_event_id, r.email_id) for r in reports)
    uow.emails.preload({r.email_id for r in reports})
