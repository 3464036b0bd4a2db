"""Asking SendGrid what it holds: the provider's lookup against the sandbox's Email Activity Feed."""

from __future__ import annotations

import httpx

from emailer.adapters.providers.sendgrid import SendGridProvider, activity_query
from emailer.sandbox.server import SandboxHandle
from handlers.ports import Outcome, lookup_of
from tests.factories import outgoing_email


def test_the_lookup_answers_held_only_for_an_email_id_the_provider_took(
    sandbox: SandboxHandle, api_key: str
) -> None:
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=5.0, activity_lookup=True)
    lookup = lookup_of(provider)
    assert lookup is not None
    assert lookup("order-42").held is False
    sent = provider.send(outgoing_email("order-42"))
    assert sent.outcome is Outcome.ACCEPTED
    answer = lookup("order-42")
    assert answer.held is True
    assert answer.provider_message_id == sent.provider_message_id
    assert lookup("order-4").held is False  # equality, not a prefix


def test_the_lookup_is_off_unless_asked_for(sandbox: SandboxHandle, api_key: str) -> None:
    assert lookup_of(SendGridProvider(api_key=api_key, base_url=sandbox.url)) is None


def test_a_refused_lookup_is_no_answer(sandbox: SandboxHandle) -> None:
    provider = SendGridProvider(
        api_key="SG.wrong-key", base_url=sandbox.url, timeout=5.0, activity_lookup=True
    )
    answer = provider.find_message("order-42")
    assert answer.held is None and answer.reason == "Email Activity answered HTTP 401"


def test_the_feed_reads_sendgrids_query_syntax(sandbox: SandboxHandle, api_key: str) -> None:
    provider = SendGridProvider(api_key=api_key, base_url=sandbox.url, timeout=5.0)
    provider.send(outgoing_email("a-1", cc=[], bcc=[]))
    provider.send(outgoing_email("b-2", cc=[], bcc=[], subject="Other"))
    headers = {"Authorization": f"Bearer {api_key}"}

    def feed(query: str, limit: int = 10) -> httpx.Response:
        params: dict[str, str | int] = {"query": query, "limit": limit}
        return httpx.get(f"{sandbox.url}/v3/messages", params=params, headers=headers, timeout=5)

    assert len(feed(activity_query("a-1")).json()["messages"]) == 1
    both = f"({activity_query('a-1')}) OR ({activity_query('b-2')})"
    assert len(feed(both).json()["messages"]) == 2
    assert feed(f'{activity_query("a-1")} AND subject="Other"').json()["messages"] == []
    [entry] = feed("to_email=\"ada@example.com\" AND unique_args['email_id'] LIKE 'b-%'").json()["messages"]
    assert entry["to_email"] == "ada@example.com" and entry["subject"] == "Other"
    assert set(entry) == {
        "from_email", "msg_id", "subject", "to_email", "status",
        "opens_count", "clicks_count", "last_event_time",
    }  # fmt: skip
    assert feed('colour="red"').status_code == 400
    assert feed("unique_args['email_id']=").status_code == 400
    assert feed("", limit=0).status_code == 400
