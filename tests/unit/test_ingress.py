"""The webhook ingress without servers: signatures, limits, basic auth, and what reaches the bus."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sendgrid.helpers.eventwebhook import EventWebhook

from contracts import RecordDeliveryReports, ReportKind
from emailer.adapters.bus import BusUnavailable
from emailer.adapters.webhooks.sendgrid_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidPublicKey,
    SignatureRejected,
    SignatureVerifier,
    load_public_key,
    parse_public_keys,
)
from emailer.config import ConfigError, load_settings
from emailer.entrypoints.ingress.app import UNVERIFIED_WARNING, WebhookConfig, create_ingress_app
from emailer.entrypoints.ingress.auth import BasicAuth
from emailer.entrypoints.ingress.forwarding import BusForwarder, batch_message_id
from emailer.signing import SIGNATURE_HEADER as INTERNAL_SIGNATURE_HEADER
from emailer.signing import Signer as InternalSigner
from tests.fakes import FakeClock, RecordingPublisher
from tests.webhooks import Signer, encode, sg_event

PATH = "/webhooks/sendgrid"
INTERNAL = InternalSigner.generated()  # the HMAC key internal commands are signed with
MakeClient = Callable[..., tuple[TestClient, RecordingPublisher]]


@pytest.fixture
def signer() -> Signer:
    return Signer.new()


@pytest.fixture
def make_client(signer: Signer) -> MakeClient:
    def make(**settings: Any) -> tuple[TestClient, RecordingPublisher]:
        settings.setdefault("sendgrid_webhook_public_keys", signer.public_key)
        config = WebhookConfig.from_settings(load_settings(**settings))
        publisher = RecordingPublisher()
        clock = FakeClock(datetime.now(UTC))
        forwarder = BusForwarder(publisher, "emailer", INTERNAL)
        api = create_ingress_app(config, forwarder, clock, lambda: True)
        return TestClient(api), publisher

    return make


def commands(publisher: RecordingPublisher) -> list[RecordDeliveryReports]:
    return [RecordDeliveryReports.model_validate_json(m.body) for m in publisher.published]


# ---------------------------------------------------------------- signatures


def test_signatures_for_sendgrids_own_helper_verify_the_same_way(signer: Signer) -> None:
    """Whatever sendgrid.helpers.eventwebhook accepts or refuses, our verifier does too."""
    helper = EventWebhook(signer.public_key)
    ours = SignatureVerifier([load_public_key(signer.public_key)])
    other = Signer.new()
    body = '[{"email":"ana@example.com","event":"delivered","email_id":"x","note":"caf\u00e9"}]'
    stamp = str(int(time.time()))
    cases = [
        (body, signer.signature(stamp, body.encode()), stamp),  # genuine
        (body.replace("delivered", "delivereD"), signer.signature(stamp, body.encode()), stamp),  # altered
        (body, signer.signature(stamp, body.encode()), str(int(stamp) + 1)),  # another timestamp
        (body, other.signature(stamp, body.encode()), stamp),  # another key
    ]
    verdicts = []
    for payload, signature, timestamp in cases:
        theirs = helper.verify_signature(payload, signature, timestamp)
        try:
            ours.verify(payload.encode(), signature, timestamp, datetime.now(UTC))
            mine = True
        except SignatureRejected:
            mine = False
        verdicts.append((theirs, mine))
    assert verdicts == [(True, True), (False, False), (False, False), (False, False)]


def test_a_key_that_is_not_p256_or_not_base64_is_refused_at_start() -> None:
    with pytest.raises(InvalidPublicKey):
        load_public_key("not base64 at all!")
    with pytest.raises(ConfigError, match="EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS"):
        WebhookConfig.from_settings(load_settings(sendgrid_webhook_public_keys="AAAA"))


def test_several_keys_verify_during_a_rotation(make_client: MakeClient, signer: Signer) -> None:
    new = Signer.new()
    client, publisher = make_client(sendgrid_webhook_public_keys=f"{signer.public_key}, {new.public_key}")
    for key in (signer, new):
        body = encode([sg_event("delivered", "ana@example.com")])
        assert client.post(PATH, content=body, headers=key.headers(body)).status_code == 200
    assert len(publisher.published) == 2
    assert len(parse_public_keys(f"{signer.public_key}\n{new.public_key}")) == 2


# ------------------------------------------------------------- refusals


def refused(client: TestClient, publisher: RecordingPublisher, body: bytes, headers: dict[str, str]) -> int:
    response = client.post(PATH, content=body, headers=headers)
    assert publisher.published == [] and publisher.calls == 0, "a refused batch must record nothing"
    assert "error" in response.json()
    return int(response.status_code)


def test_one_byte_changed_is_refused(make_client: MakeClient, signer: Signer) -> None:
    client, publisher = make_client()
    body = encode([sg_event("delivered", "ana@example.com")])
    headers = signer.headers(body)
    assert refused(client, publisher, body.replace(b"ana", b"anb"), headers) == 403


def test_no_signature_is_refused(make_client: MakeClient) -> None:
    client, publisher = make_client()
    body = encode([sg_event("delivered", "ana@example.com")])
    assert refused(client, publisher, body, {"Content-Type": "application/json"}) == 403
    bad = {SIGNATURE_HEADER: "%%%", TIMESTAMP_HEADER: str(int(time.time()))}
    assert refused(client, publisher, body, bad) == 403


@pytest.mark.parametrize("offset", [-600, 600])
def test_a_timestamp_ten_minutes_off_is_refused_as_a_replay(
    make_client: MakeClient, signer: Signer, offset: int
) -> None:
    client, publisher = make_client()
    body = encode([sg_event("delivered", "ana@example.com")])
    headers = signer.headers(body, timestamp=int(time.time()) + offset)
    response = client.post(PATH, content=body, headers=headers)
    assert response.status_code == 403 and "replay" in response.json()["error"]
    assert publisher.published == []


def test_within_the_tolerance_is_accepted(make_client: MakeClient, signer: Signer) -> None:
    client, _ = make_client(sendgrid_webhook_tolerance=60)
    body = encode([sg_event("delivered", "ana@example.com")])
    assert (
        client.post(PATH, content=body, headers=signer.headers(body, int(time.time()) - 50)).status_code
        == 200
    )
    headers = signer.headers(body, int(time.time()) - 90)
    assert client.post(PATH, content=body, headers=headers).status_code == 403


def test_a_body_over_the_limit_is_413_before_it_is_verified(make_client: MakeClient, signer: Signer) -> None:
    client, publisher = make_client(ingress_max_body_bytes=4096)
    body = encode([sg_event("delivered", "ana@example.com", note="x" * 5000)])
    assert refused(client, publisher, body, signer.headers(body)) == 413

    def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        yield body[:3000]
        yield body[3000:]

    response = client.post(PATH, content=chunks(), headers=signer.headers(body))
    assert response.status_code == 413


@pytest.mark.parametrize("body", [b"[{not json", b'{"event": "delivered"}', b'"text"', b"\xff\xfe"])
def test_malformed_json_or_not_an_array_is_400(make_client: MakeClient, signer: Signer, body: bytes) -> None:
    client, publisher = make_client()
    assert refused(client, publisher, body, signer.headers(body)) == 400


def test_basic_auth_when_configured(make_client: MakeClient, signer: Signer) -> None:
    client, publisher = make_client(ingress_basic_auth="sendgrid:s3cret-pass")
    body = encode([sg_event("delivered", "ana@example.com")])
    response = client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic")
    wrong = {**signer.headers(body), "Authorization": "Basic " + base64.b64encode(b"sendgrid:nope").decode()}
    assert refused(client, publisher, body, wrong) == 401
    right = {
        **signer.headers(body),
        "Authorization": "Basic " + base64.b64encode(b"sendgrid:s3cret-pass").decode(),
    }
    assert client.post(PATH, content=body, headers=right).status_code == 200


def test_basic_auth_compares_whole_credentials() -> None:
    auth = BasicAuth("user:pass")
    assert auth.allows("Basic " + base64.b64encode(b"user:pass").decode())
    for given in ("Basic " + base64.b64encode(b"user:pas").decode(), "Bearer user:pass", "Basic ***", None):
        assert not auth.allows(given)
    assert BasicAuth(None).allows(None)


# ------------------------------------------------------------- acceptance


def test_a_signed_batch_goes_on_the_bus_as_one_record_delivery_reports(
    make_client: MakeClient, signer: Signer
) -> None:
    client, publisher = make_client()
    events = [
        sg_event("processed", "ana@example.com"),
        sg_event("delivered", "ana@example.com", response="250 OK"),
        sg_event(
            "bounce",
            "bob@example.com",
            type="blocked",
            reason="554 blocked",
            bounce_classification="Reputation",
        ),
        sg_event("open", "ana@example.com", sg_machine_open=True, useragent="Mozilla"),
    ]
    body = encode(events)
    response = client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    assert response.json() == {"received": 4, "recorded": 4, "not_ours": 0, "unreadable": 0}
    [message] = publisher.published
    assert message.message_type == "RecordDeliveryReports" and message.destination == "emailer"
    [command] = commands(publisher)
    kinds = [r.kind for r in command.reports]
    assert kinds == [ReportKind.PROCESSED, ReportKind.DELIVERED, ReportKind.BLOCKED, ReportKind.OPENED]
    assert (
        command.reports[2].reason == "554 blocked"
        and command.reports[2].bounce_classification == "Reputation"
    )
    assert command.reports[3].machine_open is True
    assert message.message_id == batch_message_id(list(reversed(command.reports)))  # order does not matter


def test_unknown_types_and_foreign_events_never_fail_the_batch(
    make_client: MakeClient, signer: Signer
) -> None:
    client, publisher = make_client()
    events: list[Any] = [
        sg_event("brand_new_event", "ana@example.com"),
        sg_event("delivered", "someone@example.com", email_id=None),  # not sent by Emailer
        sg_event("delivered", "not an address"),
        "not an object",
    ]
    body = encode(events)
    response = client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    assert response.json() == {"received": 4, "recorded": 1, "not_ours": 1, "unreadable": 2}
    [command] = commands(publisher)
    assert command.reports[0].kind is ReportKind.UNKNOWN
    assert command.reports[0].provider_event_type == "brand_new_event"


def test_a_batch_with_nothing_of_ours_is_answered_without_publishing(
    make_client: MakeClient, signer: Signer
) -> None:
    client, publisher = make_client()
    body = encode([sg_event("delivered", "x@example.com", email_id=None)])
    assert client.post(PATH, content=body, headers=signer.headers(body)).json()["not_ours"] == 1
    assert client.post(PATH, content=b"[]", headers=signer.headers(b"[]")).status_code == 200
    assert publisher.calls == 0


def test_a_broker_that_does_not_take_the_batch_gives_503(make_client: MakeClient, signer: Signer) -> None:
    client, publisher = make_client()
    publisher.failures.append(BusUnavailable("amqp://x", "connection refused"))
    body = encode([sg_event("delivered", "ana@example.com")])
    response = client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert publisher.published == []
    again = client.post(PATH, content=body, headers=signer.headers(body))  # SendGrid retries
    assert again.status_code == 200 and len(publisher.published) == 1


def test_verification_off_only_by_setting_and_said_on_readyz(make_client: MakeClient) -> None:
    client, publisher = make_client(sendgrid_webhook_verify=False)
    body = encode([sg_event("delivered", "ana@example.com")])
    assert client.post(PATH, content=body).status_code == 200
    assert client.get("/readyz").json()["warnings"] == [UNVERIFIED_WARNING]
    locked, _ = make_client()
    ready = locked.get("/readyz")
    assert ready.status_code == 200 and "warnings" not in ready.json()
    assert locked.get("/healthz").json() == {"status": "ok"}


def test_the_standalone_ingress_refuses_to_start_without_a_key() -> None:
    from emailer.entrypoints.ingress.process import standalone_app

    class NoBus:
        def ping(self) -> bool:
            return True

    settings = load_settings(bus_url="amqp://guest:guest@127.0.0.1:1//", internal_key="k" * 32)
    with pytest.raises(ConfigError, match="EMAILER_SENDGRID_WEBHOOK_PUBLIC_KEYS"):
        standalone_app(settings, NoBus())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="EMAILER_BUS_URL"):
        standalone_app(load_settings(sendgrid_webhook_verify=False), NoBus())  # type: ignore[arg-type]


def test_occurred_at_comes_from_the_event_timestamp(make_client: MakeClient, signer: Signer) -> None:
    client, publisher = make_client()
    at = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    body = encode([sg_event("deferred", "ana@example.com", timestamp=at, attempt="3", response="421 later")])
    assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
    [report] = commands(publisher)[0].reports
    assert report.occurred_at == datetime.fromtimestamp(at, UTC)
    assert (report.kind, report.attempt, report.reason) == (ReportKind.DEFERRED, 3, "421 later")
    assert json.loads(publisher.published[0].body)["reports"][0]["provider"] == "sendgrid"


def test_the_forwarded_command_is_signed_as_an_internal_command(
    make_client: MakeClient, signer: Signer
) -> None:
    client, publisher = make_client()
    body = encode([sg_event("delivered", "ann@example.com", email_id="e-signed")])
    assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
    [message] = publisher.published
    signature = message.headers[INTERNAL_SIGNATURE_HEADER]
    signed = (message.message_id, message.message_type, message.body, signature)
    assert INTERNAL.verify(*signed)
    assert not InternalSigner.generated().verify(*signed)
