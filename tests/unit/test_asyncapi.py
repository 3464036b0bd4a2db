"""The AsyncAPI document: valid AsyncAPI 3.0, made from the contracts and the topology, served, written.

The AsyncAPI 3.0.0 JSON Schema is vendored from the npm package @asyncapi/specs
6.11.1 (schemas/3.0.0.json, Apache-2.0: tests/asyncapi/LICENSE-asyncapi-specs
and NOTICE-asyncapi-specs), so the check needs no network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from contracts.schema import message_schema, public_message_types
from contracts.version import CONTRACTS_VERSION
from contracts.wire import H
from emailer.adapters.bus import Topology
from emailer.adapters.bus.asyncapi import asyncapi_document
from emailer.adapters.bus.topologies import NServiceBusRoutes, nservicebus_routes
from emailer.config import load_settings
from emailer.entrypoints.cli import app as cli

SPEC = Path(__file__).resolve().parents[1] / "asyncapi" / "asyncapi-3.0.0.schema.json"
TOPOLOGY = Topology(input_queue="mail.in", events_exchange="mail.events", error_queue="mail.error")
EVENTS = sorted(n for n, cls in public_message_types().items() if cls.intent == "Publish")


@cache
def validator() -> Any:
    schema = json.loads(SPEC.read_text())
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def problems(document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator().iter_errors(document)]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


ROUTES: list[NServiceBusRoutes | None] = [
    None,
    NServiceBusRoutes("nsb-conventional", "Shop.Mail", "mail.in"),
    NServiceBusRoutes("nsb-direct", "Shop.Mail", "mail.in"),
]


@pytest.mark.parametrize("routes", ROUTES, ids=["native", "nsb-conventional", "nsb-direct"])
def test_the_document_is_valid_asyncapi_3_and_every_ref_resolves(routes: NServiceBusRoutes | None) -> None:
    document = asyncapi_document(TOPOLOGY, nservicebus=routes, bus_url="amqp://u:secret@broker:5672/prod")
    assert problems(document) == []
    for ref in set(refs(document)):
        assert resolve(document, ref) is not None, ref
    assert "secret" not in json.dumps(document)  # the broker without its credentials
    assert document["servers"]["rabbitmq"]["host"] == "broker:5672"


def test_the_validator_would_catch_a_broken_document() -> None:
    document = asyncapi_document(TOPOLOGY)
    document["operations"]["receiveCommands"]["action"] = "consume"  # not an AsyncAPI action
    document["channels"]["input"]["bindings"]["amqp"]["is"] = "topic"
    assert len(problems(document)) >= 2


def test_the_document_says_the_topology_headers_and_payloads() -> None:
    document = asyncapi_document(TOPOLOGY)
    assert document["info"]["version"] == CONTRACTS_VERSION
    channels = document["channels"]
    assert channels["input"]["address"] == "mail.in"
    assert channels["input"]["bindings"]["amqp"]["queue"]["name"] == "mail.in"
    assert sorted(channels["input"]["messages"]) == ["CancelEmail", "SendEmail"]  # no internal command
    for name in EVENTS:
        channel = channels[f"event.{name}"]
        assert channel["address"] == name  # the routing key is the type name
        assert channel["bindings"]["amqp"]["exchange"] == {
            "name": "mail.events", "type": "topic", "durable": True, "autoDelete": False,
        }  # fmt: skip
        assert document["operations"][f"publish{name}"]["action"] == "send"
    assert channels["error"]["address"] == "mail.error"
    assert document["operations"]["receiveCommands"]["action"] == "receive"
    messages = document["components"]["messages"]
    for name, cls in public_message_types().items():
        headers = messages[name]["headers"]["properties"]
        assert {H.MESSAGE_ID, H.CORRELATION_ID, H.ENCLOSED_MESSAGE_TYPES, H.TIME_SENT} <= set(headers)
        assert messages[name]["correlationId"]["location"] == f"$message.header#/{H.CORRELATION_ID}"
        expected = message_schema(cls, ref_template="#/components/schemas/{model}")
        payload = resolve(document, messages[name]["payload"]["$ref"])
        assert payload["properties"] == expected["properties"]
        assert payload.get("anyOf") == expected.get("anyOf")
    assert "servers" not in document  # no broker to name for the embedded bus


def test_nservicebus_topologies_add_their_exchanges_and_routing_keys() -> None:
    conventional = asyncapi_document(TOPOLOGY, nservicebus=ROUTES[1])["channels"]
    assert conventional["nservicebus.input"]["bindings"]["amqp"]["exchange"]["type"] == "fanout"
    assert conventional["nservicebus.input"]["address"] == "mail.in"
    assert conventional["nservicebus.EmailQueued"]["address"] == "Shop.Mail:EmailQueued"
    direct = asyncapi_document(TOPOLOGY, nservicebus=ROUTES[2])["channels"]
    assert direct["nservicebus.EmailQueued"]["address"] == "Shop-Mail-EmailQueued"
    assert direct["nservicebus.EmailQueued"]["bindings"]["amqp"]["exchange"]["name"] == "amq.topic"
    assert "nservicebus.input" not in direct  # commands come through the default exchange, as natively


def test_the_gateway_serves_it_next_to_openapi(tmp_path: Path) -> None:
    from emailer.bootstrap import asyncapi, bootstrap
    from emailer.entrypoints.gateway.app import create_app

    settings = load_settings(var_dir=tmp_path, input_queue="mail.in", events_exchange="mail.events")
    application = bootstrap(settings)
    try:
        with TestClient(create_app(application)) as client:
            served = client.get("/asyncapi.json")
            assert served.status_code == 200
            assert served.json() == json.loads(json.dumps(asyncapi(settings)))
            assert problems(served.json()) == []
            assert "/asyncapi.json" in client.get("/openapi.json").json()["paths"]
    finally:
        application.close()


def test_emailer_contracts_asyncapi_writes_the_configured_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "asyncapi.json"
    env = {"EMAILER_INPUT_QUEUE": "orders.mail", "EMAILER_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["contracts", "asyncapi", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert problems(document) == [] and document["channels"]["input"]["address"] == "orders.mail"
    printed = CliRunner().invoke(cli, ["contracts", "asyncapi"], env=env)
    assert json.loads(printed.output) == document


def test_the_topology_setting_picks_the_routes() -> None:
    assert nservicebus_routes("native", "A.B", "q") is None
    routes = nservicebus_routes("nsb-direct", "A.B", "q")
    assert routes is not None and routes.name == "nsb-direct"
    with pytest.raises(ValueError, match="unknown topology"):
        nservicebus_routes("fanout", "A.B", "q")
