"""End to end with attachments: RabbitMQ, PostgreSQL, an S3 server (moto), the sandbox, and the
gateway and worker as processes. The bytes travel through S3 only; messages carry references."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emailer_client.claim_check import ClaimCheck
from kombu.connection import Connection
from minio import Minio

from emailer.sandbox.client import SandboxClient
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.e2e.harness import EventTap, Stack, answers, free_port, wait_until
from tests.e2e.test_rabbitmq_postgres import sql
from tests.factories import send_email_payload

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.s3]

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\r\n"
PNG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"pixels").digest() * 50
TEXT = "Bonjour, voilà le reçu.\n".encode()


@pytest.fixture
def s3(stack: Stack, s3_endpoint: str, s3_bucket: str) -> Iterator[Minio]:
    stack.env.update(
        {
            "EMAILER_BLOB_STORE": "s3",
            "EMAILER_S3_ENDPOINT": s3_endpoint,
            "EMAILER_S3_BUCKET": s3_bucket,
            "EMAILER_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "EMAILER_S3_SECRET_KEY": S3_SECRET_KEY,
            "EMAILER_S3_REGION": "us-east-1",
            "EMAILER_S3_SECURE": "false",
            "EMAILER_BLOB_GRACE": "0",
            "EMAILER_ATTACHMENT_PURGE_INTERVAL": "0.2",
        }
    )
    yield Minio(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region="us-east-1")


def objects(client: Minio, bucket: str) -> list[str]:
    return [o.object_name or "" for o in client.list_objects(bucket, recursive=True)]


def gateway(stack: Stack) -> str:
    port = free_port()
    stack.start("gateway", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/healthz"), 30, "the gateway to listen")
    return base


def upload(base: str, data: bytes, filename: str, content_type: str, **params: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/v1/attachments", content=data, timeout=60,
        params={"filename": filename, "content_type": content_type, **params},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    reference: dict[str, Any] = response.json()
    return reference


def test_three_attachments_reach_the_sandbox_byte_identical_then_are_purged(
    stack: Stack, s3: Minio, s3_bucket: str, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    base = gateway(stack)
    stack.start_worker()
    references = [
        upload(base, PDF, "contract.pdf", "application/pdf"),
        upload(base, PNG, "logo.png", "image/png", disposition="inline", content_id="logo@shop"),
        upload(base, TEXT, "receipt.txt", "text/plain; charset=utf-8"),
    ]
    assert len(objects(s3, s3_bucket)) == 3
    payload = send_email_payload(attachments=references, html='<p><img src="cid:logo@shop"></p>')
    assert httpx.post(f"{base}/v1/emails", json=payload, timeout=30).status_code == 202

    tap.wait_for("EmailDeliveryStarted", payload["email_id"])
    [request] = sandbox_client.messages(email_id=payload["email_id"])
    sent = [
        (a["filename"], a["type"], a["disposition"], a.get("content_id"), base64.b64decode(a["content"]))
        for a in request["body"]["attachments"]
    ]
    assert sent == [
        ("contract.pdf", "application/pdf", "attachment", None, PDF),
        ("logo.png", "image/png", "inline", "logo@shop", PNG),
        ("receipt.txt", "text/plain; charset=utf-8", "attachment", None, TEXT),
    ]
    wait_until(lambda: objects(s3, s3_bucket) == [], 30, "the blobs to be purged from S3")
    view = httpx.get(f"{base}/v1/emails/{payload['email_id']}", timeout=10).json()
    assert all(a["purged_at"] for a in view["attachments"])
    assert [s["kind"] for s in view["timeline"]].count("attachments_purged") == 3


def test_an_outage_keeps_two_emails_sharing_5_mb_then_each_goes_once_and_the_blob_is_purged(
    stack: Stack, s3: Minio, s3_bucket: str, tap: EventTap, sandbox_client: SandboxClient
) -> None:
    sandbox_client.set_mode("outage")
    base = gateway(stack)
    stack.start_worker()
    big = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB
    reference = upload(base, big, "catalogue.pdf", "application/pdf")
    payloads = [send_email_payload(attachments=[reference]) for _ in range(2)]
    for payload in payloads:
        assert httpx.post(f"{base}/v1/emails", json=payload, timeout=30).status_code == 202
    wait_until(
        lambda: sql(stack, "SELECT count(*) FROM emails WHERE attempts >= 2")[0][0] == 2,
        30,
        "failed attempts",
    )
    assert objects(s3, s3_bucket) == [f"blobs/{reference['key']}"]
    # No message and no row carries the bytes: only references.
    tap.drain()
    assert tap.of("EmailQueued", payloads[0]["email_id"])
    assert max(len(json.dumps(e.body)) for e in tap.events) < 4000
    [(outbox_max,)] = sql(stack, "SELECT max(length(body)) FROM outbox")
    [(timeline_max,)] = sql(stack, "SELECT max(length(detail::text)) FROM timeline")
    assert outbox_max < 4000 and timeline_max < 1000

    sandbox_client.set_mode("normal")
    tap.wait_for("EmailDeliveryStarted", payloads[0]["email_id"])
    tap.wait_for("EmailDeliveryStarted", payloads[1]["email_id"])
    for payload in payloads:
        [request] = sandbox_client.messages(email_id=payload["email_id"])
        assert base64.b64decode(request["body"]["attachments"][0]["content"]) == big
    wait_until(lambda: objects(s3, s3_bucket) == [], 30, "the shared blob to be purged once both went")
    [(purged,)] = sql(stack, "SELECT count(*) FROM attachments WHERE purged_at IS NOT NULL")
    assert purged == 2


def refused(stack: Stack) -> str:
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        message = wait_until(
            lambda: channel.basic_get(stack.topology.error_queue, no_ack=True), 30, "error queue"
        )
    return str(message.headers["NServiceBus.ExceptionInfo.Message"])


def test_over_the_bus_a_claim_check_to_a_missing_or_altered_object_and_a_30_mb_email_are_refused(
    stack: Stack, s3: Minio, s3_bucket: str, tap: EventTap
) -> None:
    stack.start_worker()
    check = ClaimCheck(s3, s3_bucket)
    good = check.attach(io.BytesIO(PDF), filename="terms.pdf")
    payload = send_email_payload(attachments=[good.model_dump(exclude_none=True)])
    stack.send_command(payload)
    tap.wait_for("EmailDeliveryStarted", payload["email_id"])

    missing = {"filename": "x.pdf", "sha256": hashlib.sha256(b"never uploaded").hexdigest(), "size": 14}
    stack.send_command(send_email_payload(attachments=[missing]))
    assert "no blob" in refused(stack)

    altered = check.attach(io.BytesIO(PNG), filename="logo.png")
    s3.put_object(s3_bucket, f"blobs/{altered.sha256}", io.BytesIO(PNG[::-1]), len(PNG))
    stack.send_command(send_email_payload(attachments=[altered.model_dump(exclude_none=True)]))
    assert "altered" in refused(stack)

    huge = check.attach(io.BytesIO(b"\x00" * 22_500_000), filename="huge.bin")  # 30 MB in base64
    stack.send_command(send_email_payload(attachments=[huge.model_dump(exclude_none=True)]))
    assert "takes less than 30000000 bytes" in refused(stack)
    assert sql(stack, "SELECT count(*) FROM emails") == [(1,)]
