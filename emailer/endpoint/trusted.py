"""Decoding an internal command whose signature was verified, without validating again what Emailer built.

A ``RecordDeliveryReports`` carries up to SendGrid's 1,000 events, each a
``DeliveryReport`` the ingress built from validated values (the recipient
through ``EmailStr``). Only Emailer can sign one (``emailer.signing``), so
once the pipeline has checked the signature, validating each report again
(one ``email_validator`` run per event) is work without a purpose: it cost
more than applying the report (bench/webhooks.py). Here the body is parsed
and the reports are built with ``model_construct``, converting the two values
JSON cannot carry as such (the kind, the time).

A body this decoder cannot read (a shape it does not expect, from another
version of Emailer) raises ``ValueError``; the pipeline then decodes it the
validating way, which accepts it or says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic_core import from_json

from contracts import DeliveryReport, Message, RecordDeliveryReports, ReportKind

TrustedDecoder = Callable[[bytes], Message]

_REPORT_FIELDS = frozenset(DeliveryReport.model_fields)


def record_delivery_reports(body: bytes) -> RecordDeliveryReports:
    """The command in ``body`` as Emailer's ingress encoded it; ``ValueError`` if it is not that shape."""
    try:
        data = from_json(body)
        reports = [_report(item) for item in data["reports"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a RecordDeliveryReports as Emailer encodes it: {exc!r}") from None
    if not reports:
        raise ValueError("a RecordDeliveryReports with no report")
    return RecordDeliveryReports.model_construct(reports=reports)


def _report(item: dict[str, Any]) -> DeliveryReport:
    fields = item  # parsed for this call alone: changed in place
    if not item.keys() <= _REPORT_FIELDS:  # a field of a later version of the contract: ignored
        fields = {k: item[k] for k in item.keys() & _REPORT_FIELDS}
    occurred_at = datetime.fromisoformat(fields["occurred_at"])
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at without a time zone")
    for name in ("provider", "provider_event_id", "email_id", "recipient"):
        if not isinstance(fields[name], str):
            raise ValueError(f"{name} is not a string")
    fields["kind"] = ReportKind(fields["kind"])
    fields["occurred_at"] = occurred_at
    return DeliveryReport.model_construct(**fields)
