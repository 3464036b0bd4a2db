"""NServiceBus endpoints as they are: their wire format is accepted, and events go out as they read them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from contracts import CancelEmail, EmailDeliveryStarted, EmailQueued, SendEmail
from contracts.casing import from_other_casing, pascal, to_pascal
from emailer.adapters.bus.delivery import Delivery
from emailer.adapters.bus.topologies import NServiceBusRoutes
from emailer.config import ConfigError, load_settings
from emailer.endpoint.codec import decode
from emailer.endpoint.registry import Registry, Route
from handlers.errors import InvalidMessage
from handlers.ports import MessageContext
from handlers.unit_of_work import outgoing
from tests import nservicebus as nsb


@pytest.fixture
def routes() -> Registry:
    def handled(message: object, uow: object) -> None:
        return None

    return Registry([Route(SendEmail, handled), Route(CancelEmail, handled)])


def test_a_send_email_from_an_nservicebus_endpoint_is_decoded_byte_for_byte(routes: Registry) -> None:
    headers = nsb.send_headers("Shop.Contracts")
    body = nsb.send_email_body("nsb-1")
    delivery = Delivery.from_transport(
        headers=headers, properties=nsb.amqp_properties(headers), body=body, redelivered=False
    )
    assert delivery.message_id == nsb.MESSAGE_ID and delivery.message_type == "SendEmail"
    decoded = decode(delivery, routes)
    command = decoded.message
    assert isinstance(command, SendEmail)
    assert command.email_id == "nsb-1" and command.subject == "Your order shipped"
    assert command.from_.email == "orders@example.com" and [a.email for a in command.to] == [
        "ann@example.com"
    ]
    assert command.cc == [] and command.html is None and command.categories == ["orders"]
    assert command.metadata == {"OrderId": "1234"}  # the sender's keys are data: untouched
    assert decoded.context.correlation_id == nsb.MESSAGE_ID


def test_without_the_casing_step_pascal_case_would_be_refused() -> None:
    with pytest.raises(Exception, match="email_id"):
        SendEmail.model_validate_json(nsb.send_email_body("nsb-2"))


def test_a_pascal_case_body_that_breaks_a_rule_is_refused_naming_the_field(routes: Registry) -> None:
    headers = nsb.send_headers("Shop.Contracts")
    bad = json.loads(nsb.send_email_body("nsb-3"))
    bad["To"] = [{"Email": "not-an-address", "Name": None}]
    delivery = Delivery.from_transport(
        headers=headers, properties={}, body=json.dumps(bad).encode(), redelivered=False
    )
    with pytest.raises(InvalidMessage, match=r"to\.0\.email"):
        decode(delivery, routes)


def test_the_contract_spelling_wins_and_unknown_keys_stay_unknown() -> None:
    data = {"email_id": "a", "EmailId": "b", "emailId": "c", "Unknown": 1, "Metadata": {"Key": "v"}}
    assert from_other_casing(CancelEmail, data) == {"email_id": "a", "Unknown": 1, "Metadata": {"Key": "v"}}
    assert from_other_casing(CancelEmail, {"EmailId": "x", "Reason": None}) == {"email_id": "x"}
    assert pascal("email_id") == "EmailId" and pascal("from") == "From" and pascal("sha256") == "Sha256"


def _event() -> EmailQueued:
    return EmailQueued.model_validate(
        {
            "email_id": "nsb-4",
            "occurred_at": datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
            "from": {"email": "orders@example.com", "name": "Shop"},
            "to": [{"email": "ann@example.com"}],
            "metadata": {"order_id": "1234"},
        }
    )


@pytest.mark.parametrize(
    ("name", "exchange", "routing_key"),
    [
        ("nsb-conventional", "Shop.Contracts:EmailQueued", ""),
        ("nsb-direct", "amq.topic", "Shop-Contracts-EmailQueued"),
    ],
)
def test_events_are_copied_for_nservicebus_subscribers_in_pascal_case(
    name: str, exchange: str, routing_key: str
) -> None:
    routes = NServiceBusRoutes(name, "Shop.Contracts", "emailer")  # type: ignore[arg-type]
    context = MessageContext("cmd-1", "SendEmail", {"NServiceBus.CorrelationId": "corr-1"})
    event = outgoing(_event(), context, message_id="evt-1", now=datetime.now(UTC))
    (copy,) = routes.copies(event)
    assert (copy.exchange, copy.routing_key) == (exchange, routing_key)
    body = json.loads(copy.message.body)
    assert body["EmailId"] == "nsb-4" and body["From"] == {"Email": "orders@example.com", "Name": "Shop"}
    assert body["To"] == [{"Email": "ann@example.com", "Name": None}]
    assert body["Metadata"] == {"order_id": "1234"} and "email_id" not in body
    assert EmailQueued.model_validate(from_other_casing(EmailQueued, body)) == _event()  # nothing lost
    headers = copy.message.headers
    assert headers["NServiceBus.EnclosedMessageTypes"] == "Shop.Contracts.EmailQueued"
    assert copy.message.message_type == "Shop.Contracts.EmailQueued"  # the AMQP type property
    assert headers["NServiceBus.CorrelationId"] == "corr-1" and copy.message.message_id == "evt-1"
    assert json.loads(event.body)["email_id"] == "nsb-4"  # the native copy is untouched


def test_commands_are_not_copied() -> None:
    routes = NServiceBusRoutes("nsb-conventional", "Shop.Contracts", "emailer")
    context = MessageContext("m", "CancelEmail")
    command = outgoing(CancelEmail(email_id="x"), context, message_id="c", now=datetime.now(UTC))
    assert routes.copies(command) == []


def test_to_pascal_covers_every_event_field() -> None:
    started = EmailDeliveryStarted(email_id="e", occurred_at=datetime.now(UTC), provider="file")
    body = to_pascal(EmailDeliveryStarted, json.loads(started.model_dump_json(by_alias=True)))
    assert set(body) == {"EmailId", "Metadata", "OccurredAt", "Provider", "ProviderMessageId", "Attempt"}


def test_an_nservicebus_topology_needs_rabbitmq_and_a_dotnet_namespace() -> None:
    with pytest.raises(ConfigError, match="EMAILER_TOPOLOGY"):
        load_settings(topology="nsb-conventional")
    rabbit = {"bus_url": "amqp://guest:guest@127.0.0.1:5672//", "internal_key": "k" * 40}
    settings = load_settings(topology="nsb-direct", nsb_namespace="Shop.Contracts", **rabbit)
    assert settings.topology == "nsb-direct"
    with pytest.raises(ConfigError, match="nsb_namespace|NSB_NAMESPACE"):
        load_settings(topology="nsb-direct", nsb_namespace="Shop Contracts", **rabbit)
