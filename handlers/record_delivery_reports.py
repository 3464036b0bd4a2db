"""RecordDeliveryReports: apply provider callbacks to their emails, once each."""

from __future__ import annotations

import structlog

from contracts import RecordDeliveryReports
from handlers.ports import Clock
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


def record_delivery_reports(command: RecordDeliveryReports, uow: AbstractUnitOfWork, clock: Clock) -> None:
    for report in command.reports:
        if uow.provider_events.seen(report.provider, report.provider_event_id):
            continue
        uow.provider_events.record(report.provider, report.provider_event_id, report.email_id)
        email = uow.emails.get(report.email_id)
        if email is None:
            log.warning("delivery_report.unknown_email", email_id=report.email_id)
            continue
        email.apply_report(report, clock.now())
