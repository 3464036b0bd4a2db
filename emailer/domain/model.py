r"""The Email aggregate: one email, its recipients, and the transitions between its states.

States of an email::

    queued --start_attempt--> dispatching --accepted--> accepted
       ^  \                      |  \--rejected / budget spent--> failed
       |   \--cancel--> cancelled |
       +------ transient failure -+   (back to queued with a later ``not_before``)

``dispatching`` is also where an attempt whose outcome is unknown waits (the
request may have reached the provider). The rule for it: no blind resend. The
email waits for the provider's own callback (which carries the email id) until
``due_at`` (``RetryPolicy.unknown_outcome_wait`` after the attempt started);
any callback within that window settles it as accepted. Only when the window
passes without one does the scheduler treat the attempt as not delivered and
queue the email again.

Each transition appends to the timeline and may emit public events, which the
unit of work collects and writes to the outbox in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contracts import (
    AttachmentRef,
    DeliveryReport,
    EmailCancelled,
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailQueued,
    Event,
    ReportKind,
    SendEmail,
)
from emailer.domain.errors import IllegalTransition
from emailer.domain.reports import REPORT_RULES, report_unknown
from emailer.domain.retry import RetryPolicy
from emailer.domain.status import EmailStatus, RecipientStatus


@dataclass
class Recipient:
    """One addressee of an email and what is known of its delivery."""

    address: str
    kind: str  # to, cc or bcc
    name: str | None = None
    status: RecipientStatus = RecipientStatus.PENDING
    status_reason: str | None = None
    status_at: datetime | None = None
    opens: int = 0
    clicks: int = 0
    complained: bool = False
    unsubscribed: bool = False
    changed: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class TimelineEntry:
    """One step in an email's life, as a person reads it in ``emailer status``."""

    at: datetime
    kind: str
    detail: dict[str, Any]


@dataclass
class Email:
    """The aggregate root. Build new ones with :meth:`queue`; repositories rebuild stored ones."""

    id: str
    status: EmailStatus
    content: dict[str, Any]
    """from, reply_to, subject, text, html, template, headers, categories (as stored)."""
    metadata: dict[str, str]
    attachments: list[AttachmentRef]
    recipients: list[Recipient]
    created_at: datetime
    send_at: datetime | None = None
    not_before: datetime | None = None
    due_at: datetime | None = None
    attempts: int = 0
    provider: str | None = None
    provider_message_id: str | None = None
    last_error: str | None = None
    updated_at: datetime | None = None
    version: int = 0
    event_seq: int = 0
    dirty: bool = field(default=False, repr=False)
    """Changed since loaded or saved (repositories save only dirty emails)."""
    new_timeline: list[TimelineEntry] = field(default_factory=list, repr=False)
    events: list[tuple[int, Event]] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ creation

    @classmethod
    def queue(
        cls,
        command: SendEmail,
        attachments: list[AttachmentRef],
        now: datetime,
        policy: RetryPolicy,
    ) -> Email:
        """A new email from a SendEmail whose attachments are already in the blob store."""
        content = {
            "from": command.from_.model_dump(mode="json"),
            "reply_to": command.reply_to.model_dump(mode="json") if command.reply_to else None,
            "subject": command.subject,
            "text": command.text,
            "html": command.html,
            "template_id": command.template_id,
            "template_data": command.template_data,
            "headers": dict(command.headers),
            "categories": list(command.categories),
        }
        email = cls(
            id=command.email_id,
            status=EmailStatus.QUEUED,
            content=content,
            metadata=dict(command.metadata),
            attachments=list(attachments),
            recipients=[
                Recipient(address=a.email, name=a.name, kind=kind) for kind, a in command.recipients()
            ],
            created_at=now,
            send_at=command.send_at,
            not_before=command.send_at or now,
        )
        email.due_at = email.not_before
        email._record(now, "queued", {"recipients": len(email.recipients), "attachments": len(attachments)})
        email._emit(
            EmailQueued(
                email_id=email.id,
                metadata=email.metadata,
                occurred_at=now,
                from_=command.from_,
                to=command.to,
                cc=command.cc,
                bcc=command.bcc,
                subject=command.subject,
                template_id=command.template_id,
                attachments=attachments,
                categories=command.categories,
                send_at=command.send_at,
            )
        )
        return email

    # ------------------------------------------------------------------ queries

    def is_due(self, now: datetime) -> bool:
        """Queued and not held back by send_at or a retry backoff."""
        return self.status is EmailStatus.QUEUED and (self.not_before is None or self.not_before <= now)

    # ------------------------------------------------------------- dispatching

    def lease_dispatch(self, now: datetime, policy: RetryPolicy) -> None:
        """A DispatchEmail is on its way: the scheduler leaves the email alone until the lease ends."""
        self.check_status(EmailStatus.QUEUED, action="lease a dispatch")
        self.due_at = now + policy.dispatch_lease
        self.dirty = True

    def postpone(self, until: datetime, reason: str, now: datetime) -> None:
        """Hold a queued email back without an attempt (e.g. the provider's circuit is open)."""
        self.check_status(EmailStatus.QUEUED, action="postpone")
        self.not_before = self.due_at = until
        self._record(now, "postponed", {"until": until.isoformat(), "reason": reason})

    def start_attempt(self, now: datetime, policy: RetryPolicy) -> int:
        """Mark an attempt as under way (committed before the provider is called)."""
        self.check_status(EmailStatus.QUEUED, action="start an attempt")
        if not self.is_due(now):
            raise IllegalTransition(f"email {self.id} is not due until {self.not_before}")
        self.status = EmailStatus.DISPATCHING
        self.attempts += 1
        self.due_at = now + policy.unknown_outcome_wait
        self._record(now, "attempt_started", {"attempt": self.attempts})
        return self.attempts

    def delivery_started(self, provider: str, provider_message_id: str | None, now: datetime) -> None:
        """The provider accepted the email."""
        if self.status is EmailStatus.ACCEPTED:
            return  # a callback already proved it; nothing more to say
        self.check_status(EmailStatus.DISPATCHING, EmailStatus.QUEUED, action="record acceptance")
        self.status = EmailStatus.ACCEPTED
        self.provider = provider
        self.provider_message_id = provider_message_id or self.provider_message_id
        self.due_at = None
        self.last_error = None
        self._record(now, "accepted", {"provider": provider, "provider_message_id": provider_message_id})
        self._emit(
            EmailDeliveryStarted(
                email_id=self.id,
                metadata=self.metadata,
                occurred_at=now,
                provider=provider,
                provider_message_id=self.provider_message_id,
                attempt=max(1, self.attempts),
            )
        )

    def attempt_failed(
        self,
        provider: str,
        reason: str,
        now: datetime,
        policy: RetryPolicy,
        retry_after: timedelta | None = None,
    ) -> None:
        """A transient failure: try again later, or fail if the retry budget is spent."""
        if self.status is not EmailStatus.DISPATCHING:
            return  # settled meanwhile (a callback, a concurrent attempt): nothing to retry
        next_at = now + policy.delay(self.attempts, retry_after)
        if next_at > policy.deadline(self.created_at):
            self.fail(
                f"retry budget spent after {self.attempts} attempts; last error: {reason}",
                now,
                provider=provider,
            )
            return
        self.status = EmailStatus.QUEUED
        self.not_before = self.due_at = next_at
        self.last_error = reason
        self._record(
            now,
            "attempt_failed",
            {"attempt": self.attempts, "reason": reason, "next_attempt_at": next_at.isoformat()},
        )

    def attempt_outcome_unknown(self, provider: str, reason: str, now: datetime) -> None:
        """The request may have reached the provider: wait for its callback (see module doc)."""
        if self.status is not EmailStatus.DISPATCHING:
            return
        self.provider = provider
        self.last_error = reason
        self._record(
            now,
            "attempt_outcome_unknown",
            {"attempt": self.attempts, "reason": reason, "waiting_until": _iso(self.due_at)},
        )

    def give_up_waiting(self, now: datetime) -> None:
        """The wait for a callback after an unknown outcome ran out: queue the email again."""
        self.check_status(EmailStatus.DISPATCHING, action="requeue after an unknown outcome")
        self.status = EmailStatus.QUEUED
        self.not_before = self.due_at = now
        self._record(now, "requeued", {"reason": "no provider callback for the last attempt"})

    def fail(
        self, reason: str, now: datetime, provider: str | None = None, status: int | None = None
    ) -> None:
        """The email will not be sent (rejected by the provider, or the budget is spent)."""
        self.check_status(EmailStatus.DISPATCHING, EmailStatus.QUEUED, action="fail")
        self.status = EmailStatus.FAILED
        self.due_at = None
        self.last_error = reason
        self._record(now, "failed", {"reason": reason, "provider_status": status})
        self._emit(
            EmailDeliveryFailed(
                email_id=self.id,
                metadata=self.metadata,
                occurred_at=now,
                reason=reason,
                provider=provider,
                attempts=self.attempts,
                permanent=True,
                provider_status=status,
            )
        )

    def cancel(self, reason: str | None, now: datetime) -> None:
        """Cancel before the provider has it. Cancelling twice is a no-op."""
        if self.status is EmailStatus.CANCELLED:
            return
        self.check_status(EmailStatus.QUEUED, action="cancel")
        self.status = EmailStatus.CANCELLED
        self.due_at = None
        self._record(now, "cancelled", {"reason": reason})
        self._emit(EmailCancelled(email_id=self.id, metadata=self.metadata, occurred_at=now, reason=reason))

    # ---------------------------------------------------------- provider reports

    def apply_report(self, report: DeliveryReport, now: datetime) -> None:
        """Apply one provider callback. Out-of-order and repeated reports settle to the right state."""
        if (
            self.status in (EmailStatus.DISPATCHING, EmailStatus.QUEUED)
            and report.kind is not ReportKind.UNKNOWN
        ):
            # any callback proves the provider has the email: settles an unknown outcome
            self.delivery_started(report.provider, report.provider_message_id, now)
        recipient = self._recipient(report.recipient)
        if recipient is None:
            self._record(now, "report_ignored", {"recipient": report.recipient, "kind": report.kind.value})
            return
        REPORT_RULES.get(report.kind, report_unknown)(self, recipient, report)

    def _recipient(self, address: str) -> Recipient | None:
        wanted = address.lower()
        return next((r for r in self.recipients if r.address.lower() == wanted), None)

    # ----------------------------------------------------------------- guards

    def check_status(self, *allowed: EmailStatus, action: str) -> None:
        if self.status not in allowed:
            raise IllegalTransition(f"cannot {action}: email {self.id} is {self.status.value}")

    # --------------------------------------------------------------- recording

    def _record(self, at: datetime, kind: str, detail: dict[str, Any]) -> None:
        self.dirty = True
        self.updated_at = at
        self.new_timeline.append(TimelineEntry(at=at, kind=kind, detail=detail))

    def _emit(self, event: Event) -> None:
        self.event_seq += 1
        self.events.append((self.event_seq, event))

    def pull_events(self) -> list[tuple[int, Event]]:
        """The events emitted since the last pull, with their per-email sequence numbers."""
        events, self.events = self.events, []
        return events


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
