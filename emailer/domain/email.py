r"""The Email aggregate: one email, its recipients, and the transitions between its states.

States of an email::

    queued --start_attempt--> dispatching --accepted--> accepted
       ^  \                      |  \--rejected / budget spent--> failed
       |   \--cancel--> cancelled |
       +-- transient failure, ----+   (back to queued with a later ``not_before``)
           or postponed

``dispatching`` is also where an attempt whose outcome is unknown waits (the
request may have reached the provider). The rule for it: no blind resend. The
email waits for the provider's own callback (which carries the email id) until
``due_at`` (``RetryPolicy.unknown_outcome_wait`` after the attempt started);
any callback within that window settles it as accepted. Only when the window
passes without one does ``wake`` treat the attempt as not delivered and queue
the email again.

Where the provider can be asked what it holds (``RetryPolicy.resend_needs_lookup``)
the window never ends in a resend: ``reconcile`` settles the attempt from the
provider's answer instead. The provider holds a message with this email id:
accepted. It holds none, and the attempt started ``reconcile_grace`` ago or
more: queued again (the one case that resends). Anything else (no answer, or a
"none" inside the grace): still waiting.

Recipients on the suppression list fail at once when the email is queued
(``suppress``) and are left out of every request; an email with no recipient
left fails without a provider call.

Each transition appends to the timeline and may emit public events and
commands (a ``DispatchEmail`` to the endpoint itself), which the unit of work
collects and writes to the outbox in the same transaction. A transition asked
for in the wrong state raises ``IllegalTransition``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts import (
    DeliveryReport,
    DispatchEmail,
    EmailCancelled,
    EmailDeliveryCompleted,
    EmailDeliveryFailed,
    EmailDeliveryStarted,
    EmailRecipientDeliveryFailed,
    RecipientOutcome,
    ReportKind,
    SendEmail,
)
from emailer.domain.aggregate import Aggregate
from emailer.domain.errors import EmailIdReused, IllegalTransition
from emailer.domain.fingerprint import content_hash
from emailer.domain.messages import content_of, delivered_reports, email_queued, recipients_of
from emailer.domain.outcome import Outcome, SendOutcome
from emailer.domain.recipient import Recipient
from emailer.domain.reports import About, apply_report
from emailer.domain.retry import RetryPolicy
from emailer.domain.status import EmailStatus, RecipientStatus
from emailer.domain.suppression import Suppression, normalize
from emailer.domain.values import Attachment, Content


@dataclass
class Email(Aggregate):
    """The aggregate root. Build new ones with :meth:`queue`; repositories rebuild stored ones."""

    id: str
    status: EmailStatus
    content: Content
    metadata: dict[str, str]
    attachments: list[Attachment]
    recipients: list[Recipient]
    created_at: datetime
    send_at: datetime | None = None
    not_before: datetime | None = None
    due_at: datetime | None = None
    attempts: int = 0
    provider: str | None = None
    provider_message_id: str | None = None
    last_error: str | None = None
    completed_at: datetime | None = None
    """When every recipient had a final outcome (``EmailDeliveryCompleted`` was emitted)."""
    content_hash: str | None = None
    """What the email says, hashed when it was queued (``fingerprint.py``); None if stored before that."""
    attempt_started_at: datetime | None = None
    """When the latest attempt was marked as under way (what reconciliation measures from)."""
    correlation_id: str | None = None
    conversation_id: str | None = None
    """Of the command that created the email: every later message about it carries them (the unit
    of work stamps them from the creating message, and uses them for whatever starts the work later:
    the scheduler, the reconciler, a callback)."""

    # ------------------------------------------------------------------ creation

    @classmethod
    def queue(
        cls,
        command: SendEmail,
        attachments: list[Attachment],
        now: datetime,
        correlation_id: str | None = None,
        conversation_id: str | None = None,
    ) -> Email:
        """A new email from a SendEmail whose attachments are already in the blob store.

        ``correlation_id`` and ``conversation_id`` are those of the command (its
        headers); left None, the unit of work stamps them from the message being
        handled. Every later message about the email carries them.
        """
        email = cls(
            id=command.email_id,
            status=EmailStatus.QUEUED,
            content=content_of(command),
            metadata=dict(command.metadata),
            attachments=list(attachments),
            recipients=recipients_of(command),
            created_at=now,
            send_at=command.send_at,
            not_before=command.send_at or now,
            correlation_id=correlation_id,
            conversation_id=conversation_id,
        )
        email.due_at = email.not_before
        email.content_hash = email.computed_content_hash()
        email._record(now, "queued", {"recipients": len(email.recipients), "attachments": len(attachments)})
        email._emit(email_queued(command, attachments, now))
        return email

    # ------------------------------------------------------------------ queries

    def computed_content_hash(self) -> str:
        """The hash of what this email says, from its own values (as ``queue`` stored it)."""
        return content_hash(self.content, self.recipients, self.attachments, self.metadata, self.send_at)

    def check_resend(self, given_hash: str) -> None:
        """A SendEmail with this email's id arrived again: fine if it says the same, else refused.

        An email stored before hashes were kept (``content_hash`` None) is compared
        by the hash of its stored content, which is the same function of the same values.
        """
        stored = self.content_hash or self.computed_content_hash()
        if stored != given_hash:
            raise EmailIdReused(self.id, stored, given_hash)

    def is_due(self, now: datetime) -> bool:
        """Queued and not held back by send_at, a retry backoff or a postponement."""
        return self.status is EmailStatus.QUEUED and (self.not_before is None or self.not_before <= now)

    @property
    def sendable_recipients(self) -> list[Recipient]:
        """The recipients a request goes to: all but the suppressed ones (failed before any attempt)."""
        return [r for r in self.recipients if r.status is not RecipientStatus.FAILED]

    def outcome_unknown_since(self, now: datetime, policy: RetryPolicy) -> bool:
        """Waiting in ``dispatching`` long enough that no worker can still be waiting for the answer."""
        return (
            self.status is EmailStatus.DISPATCHING
            and self.attempt_started_at is not None
            and self.attempt_started_at + policy.reconcile_after <= now
        )

    # ------------------------------------------------------------- dispatching

    def wake(self, now: datetime, policy: RetryPolicy) -> bool:
        """Found due (new, send_at reached, backoff over, wait expired): ask for a dispatch if due.

        An attempt whose wait for a callback ran out is queued again first. A
        due email is leased (nobody else asks for it until the lease ends) and
        emits a ``DispatchEmail`` to the endpoint itself. True if it asked.
        """
        self.check_status(EmailStatus.QUEUED, EmailStatus.DISPATCHING, action="wake for dispatch")
        if self.due_at is not None and now < self.due_at:
            return False  # leased, backing off, or waiting for a callback
        if self.status is EmailStatus.DISPATCHING:
            if policy.resend_needs_lookup:
                self.due_at = now + policy.unknown_outcome_wait  # only ``reconcile`` may requeue it
                return False
            self.give_up_waiting(now)
        if not self.is_due(now):
            return False
        self.due_at = now + policy.dispatch_lease
        self._send(DispatchEmail(email_id=self.id))
        return True

    def start_attempt(self, now: datetime, policy: RetryPolicy) -> int:
        """Mark an attempt as under way (committed before the provider is called)."""
        self.check_status(EmailStatus.QUEUED, action="start an attempt")
        if not self.is_due(now):
            raise IllegalTransition(f"email {self.id} is not due until {self.not_before}")
        self.status = EmailStatus.DISPATCHING
        self.attempts += 1
        self.attempt_started_at = now
        self.due_at = now + policy.unknown_outcome_wait
        self._record(now, "attempt_started", {"attempt": self.attempts})
        return self.attempts

    def record_outcome(self, outcome: SendOutcome, provider: str, now: datetime, policy: RetryPolicy) -> None:
        """What the provider said about the attempt under way decides what happens next.

        A callback may have settled the email as accepted while the provider call
        was in flight: it has the last word, and any other outcome changes nothing.
        """
        if outcome.outcome is Outcome.ACCEPTED:
            self.delivery_started(provider, outcome.provider_message_id, now)
            if outcome.delivered:
                message_id = outcome.provider_message_id
                for report in delivered_reports(self.id, self.sendable_recipients, provider, message_id, now):
                    self.apply_report(report, now)
            return
        if self.status is EmailStatus.ACCEPTED:
            return
        reason = outcome.reason or outcome.outcome.value
        if outcome.outcome is Outcome.REJECTED:
            self.check_status(EmailStatus.DISPATCHING, action="record a rejection")
            self.fail(reason, now, provider=provider, status=outcome.status)
        elif outcome.outcome is Outcome.TRANSIENT:
            self.attempt_failed(provider, reason, now, policy, retry_after=outcome.retry_after)
        elif outcome.outcome is Outcome.UNKNOWN:
            self.attempt_outcome_unknown(provider, reason, now)
        elif outcome.outcome is Outcome.MISCONFIGURED:
            # Our credentials, not the email: it waits for the fix and never fails for it.
            self.attempt_postponed(outcome.retry_at or now + policy.max_delay, reason, now)
        else:
            assert outcome.retry_at is not None  # SendOutcome guarantees it
            self.attempt_postponed(outcome.retry_at, reason, now)

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
        self.check_status(EmailStatus.DISPATCHING, action="record a failed attempt")
        next_at = now + policy.delay(self.attempts, retry_after)
        if next_at > policy.deadline(self.created_at, self.send_at):
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
        self.check_status(EmailStatus.DISPATCHING, action="record an unknown outcome")
        self.provider = provider
        self.last_error = reason
        self._record(
            now,
            "attempt_outcome_unknown",
            {"attempt": self.attempts, "reason": reason, "waiting_until": _iso(self.due_at)},
        )

    def attempt_postponed(self, until: datetime, reason: str, now: datetime) -> None:
        """The attempt was not made (the provider's circuit is open): queue again for ``until``.

        It spends no attempt and cannot spend the retry budget: nothing was tried.
        """
        self.check_status(EmailStatus.DISPATCHING, action="postpone")
        self.status = EmailStatus.QUEUED
        self.attempts -= 1
        self.not_before = self.due_at = until
        self._record(now, "postponed", {"until": until.isoformat(), "reason": reason})

    def reconcile(
        self,
        attempt: int,
        held: bool,
        provider: str,
        provider_message_id: str | None,
        now: datetime,
        policy: RetryPolicy,
    ) -> str:
        """Settle attempt number ``attempt`` from the provider's own records (see module doc).

        ``held``: the provider holds a message with this email id. Returns what
        happened: ``accepted``, ``requeued``, or ``waiting`` (also when the email
        moved on meanwhile: a callback settled it, or another attempt began).
        """
        if self.status is not EmailStatus.DISPATCHING or self.attempts != attempt:
            return "waiting"
        if held:
            self._record(now, "reconciled", {"attempt": attempt, "provider_holds": True})
            self.delivery_started(provider, provider_message_id, now)
            return "accepted"
        started = self.attempt_started_at
        if started is None or now < started + policy.reconcile_grace:
            return "waiting"
        self._record(now, "reconciled", {"attempt": attempt, "provider_holds": False})
        self.status = EmailStatus.QUEUED
        self.not_before = self.due_at = now
        self._record(now, "requeued", {"reason": f"{provider} holds no message with this email id"})
        return "requeued"

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

    # ------------------------------------------------------------ suppression

    def suppress(self, suppressions: Iterable[Suppression], now: datetime) -> int:
        """Recipients on the suppression list fail at once and are not sent to; how many.

        If no recipient is left the email fails without a provider call.
        """
        self.check_status(EmailStatus.QUEUED, action="suppress recipients")
        listed = {s.address: s for s in suppressions}
        suppressed = 0
        for r in self.sendable_recipients:
            entry = listed.get(normalize(r.address))
            if entry is None or not r.fail(now, entry.describe()):
                continue
            suppressed += 1
            self._record(now, "recipient_suppressed", {"recipient": r.address, "reason": entry.reason.value})
            self._emit(
                EmailRecipientDeliveryFailed(
                    email_id=self.id,
                    metadata=self.metadata,
                    occurred_at=now,
                    recipient=r.address,
                    failure="suppressed",
                    reason=entry.describe(),
                )
            )
        if suppressed and not self.sendable_recipients:
            self.fail("every recipient is on the suppression list", now)
        return suppressed

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
        about = About(self.id, self.metadata, self.provider_message_id)
        for happened in apply_report(recipient, report, about):
            self._record(report.occurred_at, happened.kind, happened.detail)
            if happened.event is not None:
                self._emit(happened.event)
        self._complete_if_settled(now)

    def _recipient(self, address: str) -> Recipient | None:
        """The recipient ``address`` names (case-insensitively), or None; on the hot path of reports."""
        wanted = address.lower()
        for recipient in self.recipients:
            if recipient.address.lower() == wanted:
                return recipient
        return None

    def _complete_if_settled(self, now: datetime) -> None:
        """Once every recipient has a final outcome the email is final: say so, once.

        A later report may still change a recipient (an asynchronous bounce after
        delivery): its own event says so; the email stays completed.
        """
        if self.completed_at is not None or self.status is not EmailStatus.ACCEPTED:
            return
        if not all(r.is_final for r in self.recipients):
            return
        self.completed_at = now
        # Built without validating again (as ``reports.py`` builds its events): every value is the
        # email's own, validated when it was accepted.
        outcomes = [
            RecipientOutcome.model_construct(
                recipient=r.address,
                outcome="delivered" if r.status is RecipientStatus.DELIVERED else "failed",
                reason=r.status_reason,
                at=r.status_at,
            )
            for r in self.recipients
        ]
        delivered = sum(o.outcome == "delivered" for o in outcomes)
        self._record(now, "completed", {"delivered": delivered, "failed": len(outcomes) - delivered})
        completed = EmailDeliveryCompleted.model_construct(
            email_id=self.id, metadata=self.metadata, occurred_at=now, outcomes=outcomes
        )
        self._emit(completed)

    # -------------------------------------------------------------------- guards

    def check_status(self, *allowed: EmailStatus, action: str) -> None:
        if self.status not in allowed:
            raise IllegalTransition(f"cannot {action}: email {self.id} is {self.status.value}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
