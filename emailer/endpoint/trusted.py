"""Decoding an internal command whose signature was verified, without validating again what Emailer built.

A ``RecordDeliveryReports`` carries up to SendGrid's 1,000 events, each a
``DeliveryReport`` the ingress built from validated values (the recipient
through ``EmailStr``). Only Emailer can sign one (``emailer.signing``), so
once the pipeline has checked the signature, validating each report again
(one ``email_validator`` run per event) is work without a purpose: it cost
more than applying the report (bench/webhooks.py). Here the body is parsed
and the reports are built with ``model_construct``, converting the two values
JSON cannot carry as such (the kind, the time).

Even ``model_construct`` walked every field's aliases for every report (about
5 us of the 7 us a report took to decode, bench/webhooks.py): ``_construct``
does what it does for a model without aliases, private attributes or
post-init (checked at import), with the defaults looked up once.

A body this decoder cannot read (a shape it does not expect, from another
version of Emailer) raises ``ValueError``; the pipeline then decodes it the
validating way, which accepts it or says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json

from contracts import DeliveryReport, Message, RecordDeliveryReports, ReportKind

TrustedDecoder = Callable[[bytes], Message]

_REPORT_FIELDS = frozenset(DeliveryReport.model_fields)
_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True)
    for name, field in DeliveryReport.model_fields.items()
    if not field.is_required()
}
_new = object.__new__
_set = object.__setattr__


def _plain(model: type[BaseModel]) -> bool:
    """``model`` is one ``_construct`` builds exactly as ``model_construct`` would."""
    return (
        not model.__pydantic_root_model__
        and not model.__private_attributes__
        and model.__pydantic_post_init__ is None
        and model.model_config.get("extra") != "allow"
        and all(f.alias is None and f.validation_alias is None for f in model.model_fields.values())
        and all(f.default_factory is None for f in model.model_fields.values())
    )


_FAST = _plain(DeliveryReport)


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
    return _construct(fields) if _FAST else DeliveryReport.model_construct(**fields)


def _construct(fields: dict[str, Any]) -> DeliveryReport:
    """``DeliveryReport.model_construct(**fields)`` for the keys of the contract: the fields set are
    those given, the missing optional ones take their defaults."""
    given = set(fields)
    if len(given) < len(_REPORT_FIELDS):
        fields = {**_DEFAULTS, **fields}
    report = _new(DeliveryReport)
    _set(report, "__dict__", fields)
    _set(report, "__pydantic_fields_set__", given)
    _set(report, "__pydantic_extra__", None)
    _set(report, "__pydantic_private__", None)
    return report
