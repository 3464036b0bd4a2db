"""A signed RecordDeliveryReports decoded without validation gives what the validating decode gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import DeliveryReport, RecordDeliveryReports, ReportKind
from emailer.endpoint.trusted import record_delivery_reports
from emailer.entrypoints.ingress.forwarding import record_reports_message
from emailer.signing import Signer

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def reports() -> list[DeliveryReport]:
    """One report of every kind, with the optional fields set on some and left out on others."""
    made = []
    for i, kind in enumerate(ReportKind):
        extra: dict[str, Any] = {}
        if i % 2:
            extra = {
                "provider_message_id": f"sg-{i}.filter", "reason": "550 5.1.1 no such user", "url": "https://x.test/",
                "user_agent": "Mozilla/5.0", "provider_event_type": kind.value, "mta_response": "250 OK",
                "bounce_type": "bounce", "bounce_classification": "Invalid Address", "machine_open": True,
                "attempt": 3,
            }  # fmt: skip
        made.append(
            DeliveryReport(
                provider="sendgrid", provider_event_id=f"ev-{i}", email_id="order-42",
                recipient="Ann.Lee@Example.COM", kind=kind, occurred_at=T0 + timedelta(seconds=i), **extra,
            )  # fmt: skip
        )
    return made


def validated(body: bytes) -> RecordDeliveryReports:
    return RecordDeliveryReports.model_validate_json(body)


def test_what_the_ingress_encodes_decodes_to_the_same_reports_either_way() -> None:
    message = record_reports_message(reports(), T0, "emailer", Signer.generated())

    trusted = record_delivery_reports(message.body)

    assert trusted.model_dump() == validated(message.body).model_dump()
    assert trusted.reports == reports()
    assert [r.model_fields_set for r in trusted.reports] == [
        r.model_fields_set for r in validated(message.body).reports
    ]
    assert [r.model_dump_json() for r in trusted.reports] == [r.model_dump_json() for r in reports()]
    assert all(isinstance(r.kind, ReportKind) and r.occurred_at.tzinfo for r in trusted.reports)


def test_fields_from_another_version_of_emailer_are_read_as_the_contract_reads_them() -> None:
    """A newer sender's unknown field is ignored; an older one's missing optional field takes its default."""
    data = RecordDeliveryReports(reports=reports()).model_dump(mode="json")
    for item in data["reports"]:
        item["added_later"] = {"x": 1}
        del item["machine_open"], item["attempt"]
    body = json.dumps(data).encode()

    trusted, checked = record_delivery_reports(body), validated(body)
    assert trusted.model_dump() == checked.model_dump()
    assert trusted.reports == checked.reports
    assert [r.model_fields_set for r in trusted.reports] == [r.model_fields_set for r in checked.reports]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"reports": []}',
        b'{"reports": [{"provider": "sendgrid"}]}',
        b'{"reports": [1]}',
    ],
)
def test_a_body_of_another_shape_is_refused_for_the_validating_decode(body: bytes) -> None:
    with pytest.raises(ValueError):
        record_delivery_reports(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "exploded"),
        ("occurred_at", "2026-01-01T12:00:00"),
        ("occurred_at", 1767268800),
        ("email_id", 7),
    ],
)
def test_a_value_it_cannot_take_as_it_is_is_refused_for_the_validating_decode(field: str, value: Any) -> None:
    data = RecordDeliveryReports(reports=reports()[:1]).model_dump(mode="json")
    data["reports"][0][field] = value
    with pytest.raises(ValueError):
        record_delivery_reports(json.dumps(data).encode())


def test_a_report_built_without_validation_behaves_as_a_validated_one() -> None:
    """Frozen, hashable as the contract's models are, and copied the pydantic way."""
    message = record_reports_message(reports()[:1], T0, "emailer", Signer.generated())
    [report] = record_delivery_reports(message.body).reports

    with pytest.raises(ValueError):
        report.email_id = "another"  # type: ignore[misc]
    assert report.model_copy(update={"attempt": 7}).attempt == 7
    assert report.model_extra is None
