"""The exported schemas alone are enough to build messages Emailer accepts.

For every public message: the minimal instance built from ``required`` (first
``anyOf`` branch) is accepted by the model, and instances hypothesis-jsonschema
generates from the schema are accepted too, except where they break one of the
rules JSON Schema cannot express. Those residual rules (also listed in each
schema under ``x-rules-not-in-schema``) are the only refusals tolerated:

* a lone UTF-16 surrogate in a string (hypothesis draws none; no portable pattern names them);
* an address that email-validator refuses although it has the ``email`` format
  (special-use or syntactically odd domains, quoted local parts, ...);
* more than 1000 recipients across to, cc and bcc together;
* the same address twice across to, cc and bcc, compared case-insensitively;
* metadata with the email id over 10,000 bytes as JSON;
* template data over 1 MiB as JSON;
* inline attachment content over 2 MiB once decoded;
* a string ending in a newline where a pattern ends in ``$``: JSON Schema patterns
  are ECMA-262 (``$`` is the end of the string) but hypothesis-jsonschema reads them
  with Python's ``re``, whose ``$`` also matches before a final newline.

``EMAILER_SCHEMA_EXAMPLES`` raises the example count (default small for CI).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic import ValidationError

import contracts
from contracts.schema import INTERNAL_MESSAGES, message_schema, public_message_types, write_schemas
from tests.schema_instances import generation_branches, minimal_instance

EXAMPLES = int(os.environ.get("EMAILER_SCHEMA_EXAMPLES", "5"))
PUBLIC = sorted(public_message_types())
_RESIDUAL_MESSAGES = (
    "value is not a valid email address",
    "recipients; at most",
    "appears more than once",
    "bytes as JSON",
    "may travel inline",
)


def _schema(name: str) -> dict[str, Any]:
    return message_schema(contracts.message_types()[name])


@functools.cache
def _generated(name: str) -> st.SearchStrategy[Any]:
    return st.one_of([from_schema(branch) for branch in generation_branches(_schema(name))])


def test_export_is_public_messages_unless_asked(tmp_path: Path) -> None:
    public = {p.name for p in write_schemas(tmp_path / "public")}
    everything = {p.name for p in write_schemas(tmp_path / "all", internal=True)}
    assert public == {f"{name}.schema.json" for name in PUBLIC}
    assert INTERNAL_MESSAGES.isdisjoint(name.split(".")[0] for name in public)
    assert everything - public == {f"{name}.schema.json" for name in INTERNAL_MESSAGES}


@pytest.mark.parametrize("name", PUBLIC)
def test_each_schema_has_an_id_and_the_contracts_version_and_is_valid_json_schema(name: str) -> None:
    schema = _schema(name)
    assert schema["$id"] == f"urn:emailer:contracts:{contracts.CONTRACTS_VERSION}:{name}"
    assert schema["x-contracts-version"] == contracts.CONTRACTS_VERSION
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", PUBLIC)
def test_the_minimal_instance_from_the_schema_alone_is_accepted(name: str) -> None:
    schema = _schema(name)
    instance = minimal_instance(schema)
    jsonschema.Draft202012Validator(schema).validate(instance)
    contracts.message_types()[name].model_validate_json(json.dumps(instance))


def test_what_used_to_pass_the_schema_and_be_refused_no_longer_passes_it() -> None:
    """Before: ``required`` alone (no subject, no body) was schema-valid and refused by the model."""
    validator = jsonschema.Draft202012Validator(_schema("SendEmail"))
    base = {"email_id": "a", "from": {"email": "a@example.com"}, "to": [{"email": "b@example.com"}]}
    refused_by_both = [
        base,
        {**base, "subject": "s"},
        {**base, "subject": "s", "text": ""},
        {**base, "text": "no subject"},
        {**base, "subject": "s", "text": "t", "headers": {"reply-TO": "x"}},
        {**base, "subject": "s", "text": "t", "headers": {"Content-Type": "x"}},
        {**base, "subject": "s", "text": "t", "categories": ["a", "a"]},
        {**base, "subject": "s", "text": "t", "metadata": {"email_id": "x"}},
        {**base, "subject": "a\rb", "text": "t"},
        {**base, "subject": "s", "text": "nul\u0000"},
        {**base, "subject": "s", "text": "t", "from": {"email": "ä@example.com"}},
        {**base, "subject": "s", "text": "t", "attachments": [{"filename": "a"}]},
        {**base, "subject": "s", "text": "t", "attachments": [{"filename": "..", "sha256": "0" * 64}]},
        {**base, "subject": "s", "text": "t",
         "attachments": [{"filename": "a", "sha256": "0" * 64, "disposition": "inline"}]},
        {**base, "subject": "s", "text": "t", "attachments": [{"filename": "a", "content": "not base64!"}]},
        {**base, "template_id": "t", "template_data": _nested(33)},
    ]  # fmt: skip
    for instance in refused_by_both:
        assert not validator.is_valid(instance), instance
        with pytest.raises(ValidationError):
            contracts.SendEmail.model_validate(instance)
    assert validator.is_valid({**base, "template_id": "t", "template_data": _nested(32)})


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth - 1):
        node = {"k": node}
    return node


@pytest.mark.parametrize("name", PUBLIC)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not os.environ.get("EMAILER_SCHEMA_EXAMPLES"),  # CI: the same examples every run
)
@given(data=st.data())
def test_instances_generated_from_the_schema_are_accepted(name: str, data: st.DataObject) -> None:
    instance = data.draw(_generated(name))
    note(repr(instance))
    try:
        contracts.message_types()[name].model_validate_json(json.dumps(instance))
    except ValidationError as exc:
        unexpected = [error for error in exc.errors() if not _residual(error)]
        assert not unexpected, unexpected


def _residual(error: Any) -> bool:
    message = str(error.get("msg", ""))
    if any(text in message for text in _RESIDUAL_MESSAGES):
        return True
    value = error.get("input")
    return isinstance(value, str) and value.endswith("\n")
