"""What SendGrid would report for an accepted request: events chosen by each recipient's address.

The local part (before any ``+tag``) picks the story; anything else is
processed then delivered. Each event looks like SendGrid's: the message's
custom args flattened into it, an ``sg_event_id``, an ``sg_message_id`` that
begins with the ``X-Message-Id`` the send was answered with, unix timestamps.

============================  ==========================================================
recipient                     events
============================  ==========================================================
``bounce@``                   processed, bounce (type bounce, 550 5.1.1)
``blocked@``                  processed, bounce (type blocked, 554)
``defer-then-deliver@``       processed, deferred (attempt 1, 421), delivered
``drop@``                     dropped (reason Invalid)
``open-click@``               processed, delivered, open, click
``spam@``                     processed, delivered, spamreport
``unsub@``                    processed, delivered, unsubscribe
anything else                 processed, delivered
============================  ==========================================================
"""

from __future__ import annotations

import secrets
from typing import Any

DELIVERED_RESPONSE = "250 2.0.0 OK sandbox"
STORIES: dict[str, list[dict[str, Any]]] = {
    "bounce": [
        {"event": "processed"},
        {
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "bounce_classification": "Invalid Address",
        },
    ],
    "blocked": [
        {"event": "processed"},
        {
            "event": "bounce",
            "type": "blocked",
            "status": "5.7.1",
            "reason": "554 5.7.1 Service unavailable; client host blocked",
            "bounce_classification": "Reputation",
        },
    ],
    "defer-then-deliver": [
        {"event": "processed"},
        {"event": "deferred", "attempt": "1", "response": "421 4.7.0 Try again later"},
        {"event": "delivered", "response": DELIVERED_RESPONSE},
    ],
    "drop": [{"event": "dropped", "reason": "Invalid"}],
    "open-click": [
        {"event": "processed"},
        {"event": "delivered", "response": DELIVERED_RESPONSE},
        {"event": "open", "useragent": "Mozilla/5.0 (sandbox)", "sg_machine_open": False},
        {"event": "click", "url": "https://example.com/sandbox-link", "useragent": "Mozilla/5.0 (sandbox)"},
    ],
    "spam": [
        {"event": "processed"},
        {"event": "delivered", "response": DELIVERED_RESPONSE},
        {"event": "spamreport"},
    ],
    "unsub": [
        {"event": "processed"},
        {"event": "delivered", "response": DELIVERED_RESPONSE},
        {"event": "unsubscribe"},
    ],
}
DEFAULT_STORY: list[dict[str, Any]] = [
    {"event": "processed"},
    {"event": "delivered", "response": DELIVERED_RESPONSE},
]


def story_for(address: str) -> list[dict[str, Any]]:
    local = address.partition("@")[0].lower().partition("+")[0]
    return STORIES.get(local, DEFAULT_STORY)


def events_for(body: dict[str, Any], message_id: str, now: float) -> list[dict[str, Any]]:
    """Every event SendGrid would post for one accepted mail send, in the order it happened.

    The n-th step of a story happens ``n`` seconds after the first (the first
    a few seconds ago), so the timestamps order the events as they happened.
    """
    events: list[dict[str, Any]] = []
    global_args = _args(body.get("custom_args"))
    categories = [c for c in body.get("categories") or [] if isinstance(c, str)]
    for p_index, personalization in enumerate(body.get("personalizations") or []):
        if not isinstance(personalization, dict):
            continue
        args = {**global_args, **_args(personalization.get("custom_args"))}
        recipients = [
            r["email"]
            for field in ("to", "cc", "bcc")
            for r in personalization.get(field) or []
            if isinstance(r, dict) and isinstance(r.get("email"), str)
        ]
        for r_index, address in enumerate(recipients):
            story = story_for(address)
            start = int(now) - len(story)
            for step, outcome in enumerate(story):
                event: dict[str, Any] = {
                    **args,  # SendGrid flattens the custom args into each event
                    "email": address,
                    "timestamp": start + step,
                    "smtp-id": f"<{message_id}@sandbox.sendgrid.net>",
                    "sg_event_id": secrets.token_urlsafe(16),
                    "sg_message_id": f"{message_id}.sandbox{p_index}.{r_index}.0",
                    **outcome,
                }
                if categories:
                    event["category"] = categories
                events.append(event)
    return events


def _args(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
