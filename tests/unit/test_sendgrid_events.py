"""The SendGrid event mapping table: every documented event type, and the unknown fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import DeliveryReport, ReportKind
from emailer.adapters.webhooks.sendgrid import EVENT_KINDS, map_batch, to_report
from tests.webhooks import sg_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "fields", "kind"),
    [
        ("processed", {}, ReportKind.PROCESSED),
        ("delivered", {"response": "250 OK"}, ReportKind.DELIVERED),
        ("deferred", {"response": "421 try later", "attempt": "2"}, ReportKind.DEFERRED),
        ("bounce", {"type": "bounce", "reason": "550 no such user"}, ReportKind.BOUNCED),
        ("bounce", {"type": "blocked", "reason": "554 blocked"}, ReportKind.BLOCKED),
        ("bounce", {"reason": "550"}, ReportKind.BOUNCED),
        ("dropped", {"reason": "Bounced Address"}, ReportKind.DROPPED),
        ("open", {"useragent": "Mozilla", "sg_machine_open": False}, ReportKind.OPENED),
        ("click", {"url": "https://example.com/a"}, ReportKind.CLICKED),
        ("spamreport", {}, ReportKind.COMPLAINED),
        ("unsubscribe", {}, ReportKind.UNSUBSCRIBED),
        ("group_unsubscribe", {"asm_group_id": 3}, ReportKind.UNSUBSCRIBED),
        ("group_resubscribe", {"asm_group_id": 3}, ReportKind.RESUBSCRIBED),
        ("something_new", {}, ReportKind.UNKNOWN),
    ],
)
def test_each_sendgrid_event_maps_to_one_kind(
    event: str, fields: dict[str, Any], kind: ReportKind
) -> None:
    report = to_report(sg_event(event, "Ana@Example.com", **fields), "order-42", NOW)
    assert report.kind is kind
    assert (report.email_id, report.provider, report.provider_event_type) == ("order-42", "sendgrid", event)


ODD_VALUES: list[dict[str, Any]] = [
    {},
    {"attempt": "2", "reason": 550, "response": ["250", "OK"], "type": "Blocked"},
    {"sg_machine_open": "yes", "useragent": "", "url": None, "timestamp": 1.5e9, "attempt": -1},
    {"sg_event_id": 12345, "sg_message_id": 9, "bounce_classification": {"a": 1}},
]


@pytest.mark.parametrize("fields", ODD_VALUES)
@pytest.mark.parametrize("event", [*EVENT_KINDS, "something_new"])
def test_a_mapped_report_is_one_the_contract_accepts_as_it_is(event: str, fields: dict[str, Any]) -> None:
    """Reports are built without pydantic's validation: each must be what validation would give."""
    report = to_report(sg_event(event, "Ana.Lee@Example.COM", **fields), "order-42", NOW)
    assert DeliveryReport.model_validate(report.model_dump()) == report
    assert DeliveryReport.model_validate_json(report.model_dump_json()) == report


def test_an_event_whose_address_is_not_one_is_unreadable_every_time() -> None:
    events = [sg_event("delivered", "not an address"), sg_event("open", "not an address"), 7]
    for _ in range(2):
        batch = map_batch(events, NOW)
        assert (batch.reports, batch.unreadable) == ([], 3)


def test_every_event_type_sendgrid_documents_is_in_the_table() -> None:
    documented = {
        "processed", "dropped", "delivered", "deferred", "bounce", "open", "click", "spamreport",
        "unsubscribe", "group_unsubscribe", "group_resubscribe",
    }  # fmt: skip
    assert set(EVENT_KINDS) == documented


def test_reasons_land_where_subscribers_look() -> None:
    dropped = to_report(sg_event("dropped", "a@example.com", reason="Unsubscribed Address"), "e", NOW)
    assert dropped.reason == "Unsubscribed Address"
    delivered = to_report(sg_event("delivered", "a@example.com", response="250 2.0.0 OK"), "e", NOW)
    assert (delivered.reason, delivered.mta_response) == ("250 2.0.0 OK", "250 2.0.0 OK")
    bounce = to_report(
        sg_event(
            "bounce", "a@example.com", type="bounce", reason="550 5.1.1", bounce_classification="Invalid"
        ),
        "e",
        NOW,
    )
    assert (bounce.reason, bounce.bounce_type, bounce.bounce_classification) == (
        "550 5.1.1",
        "bounce",
        "Invalid",
    )
    opened = to_report(sg_event("open", "a@example.com", sg_machine_open=True, useragent="UA"), "e", NOW)
    assert (opened.machine_open, opened.user_agent) == (True, "UA")


def test_an_event_without_sg_event_id_still_dedupes_by_its_content() -> None:
    event = sg_event("delivered", "a@example.com", timestamp=1_700_000_000)
    del event["sg_event_id"]
    first = to_report(event, "e", NOW)
    again = to_report(dict(reversed(list(event.items()))), "e", NOW)
    assert first.provider_event_id == again.provider_event_id
    assert first.provider_event_id.startswith("sha256:")


def test_a_missing_or_absurd_timestamp_is_the_time_received() -> None:
    for stamp in (None, "yesterday", 10**20):
        assert to_report(sg_event("delivered", "a@example.com", timestamp=stamp), "e", NOW).occurred_at == NOW


def test_the_batch_counts_what_is_not_ours() -> None:
    batch = map_batch(
        [sg_event("delivered", "a@example.com"), sg_event("delivered", "b@example.com", email_id=None), 7],
        NOW,
    )
    assert (len(batch.reports), batch.not_ours, batch.unreadable) == (1, 1, 1)
