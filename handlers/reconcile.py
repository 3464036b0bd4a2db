"""Reconciliation: settle attempts whose outcome is unknown from the provider's own records.

An email waits in ``dispatching`` when its attempt's outcome is unknown: the
request may have reached the provider (a lost answer), or the worker died
between the provider's answer and our commit. Before anything is sent again
the provider is asked whether it holds a message carrying the email id
(``MessageLookup``), and ``Email.reconcile`` decides: held -> accepted;
none and past the grace period -> queued again; otherwise it keeps waiting.

No transaction is held open while the provider is asked: the candidates are
read first, each answer is applied in a short transaction of its own, and an
email that moved on meanwhile (a callback settled it) is left as it is.
"""

from __future__ import annotations

from collections import Counter

import structlog

from emailer.domain import RetryPolicy
from emailer.retries import conflict_retrying
from handlers.errors import ConcurrencyConflict
from handlers.ports import Clock, LookupAnswer, MessageContext, MessageLookup
from handlers.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger(__name__)


def reconcile_unknown_outcomes(
    uow: AbstractUnitOfWork,
    lookup: MessageLookup,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
    limit: int,
) -> Counter[str]:
    """One pass over at most ``limit`` waiting emails (one lookup each); what came of them."""
    outcomes: Counter[str] = Counter()
    for email_id, attempt in _candidates(uow, clock, policy, limit):
        answer = lookup(email_id)
        if answer.held is None:
            # The provider cannot say now (rate limit, outage): nothing is concluded; the next pass asks.
            log.warning("reconcile.lookup_unavailable", email_id=email_id, reason=answer.reason)
            outcomes["unavailable"] += 1
            break
        outcome = _apply(uow, email_id, attempt, answer, provider, clock, policy)
        log.info("reconcile.answer", email_id=email_id, attempt=attempt, held=answer.held, outcome=outcome)
        outcomes[outcome] += 1
    return outcomes


def _candidates(
    uow: AbstractUnitOfWork, clock: Clock, policy: RetryPolicy, limit: int
) -> list[tuple[str, int]]:
    """Emails waiting in ``dispatching`` past ``reconcile_after``, with the attempt each waits on."""
    found = []
    with uow:
        now = clock.now()
        for email_id in uow.emails.unsettled(now - policy.reconcile_after, limit):
            email = uow.emails.get(email_id)
            if email is not None and email.outcome_unknown_since(now, policy):
                found.append((email_id, email.attempts))
    return found


def _apply(
    uow: AbstractUnitOfWork,
    email_id: str,
    attempt: int,
    answer: LookupAnswer,
    provider: str,
    clock: Clock,
    policy: RetryPolicy,
) -> str:
    outcome = "waiting"
    for retry in conflict_retrying(ConcurrencyConflict):
        with retry, uow:
            uow.context = MessageContext.originating("Reconciler")
            email = uow.emails.get(email_id)
            if email is None:  # pragma: no cover - emails are never deleted
                return "waiting"
            held = bool(answer.held)
            outcome = email.reconcile(
                attempt, held, provider, answer.provider_message_id, clock.now(), policy
            )
            uow.commit()
    return outcome
