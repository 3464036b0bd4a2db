"""POST /v1/attachments and references in POST /v1/emails, in the embedded mode (local blob store)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emailer.adapters.persistence import schema
from emailer.bootstrap import App, bootstrap
from emailer.config import load_settings
from tests.factories import PDF_BYTES, send_email_payload

MAX = 64 * 1024


@pytest.fixture
def app(tmp_path: Path, unique_name: str) -> Iterator[App]:
    settings = load_settings(
        var_dir=tmp_path, input_queue=f"{unique_name}.in", events_exchange=f"{unique_name}.events",
        error_queue=f"{unique_name}.error", attachment_max_bytes=MAX, sendgrid_max_email_bytes=200_000,
        provider="sendgrid", sendgrid_api_key="SG.test-key-not-used", sendgrid_base_url="http://127.0.0.1:9",
    )  # fmt: skip
    application = bootstrap(settings)
    schema.upgrade(application.engine)
    application.bus.connect()
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    from emailer.entrypoints.gateway.app import create_app

    with TestClient(create_app(app)) as c:
        yield c


def upload(client: TestClient, data: bytes, **params: str) -> dict[str, object]:
    response = client.post(
        "/v1/attachments", content=data, params={"filename": "invoice.pdf", **params},
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    reference: dict[str, object] = response.json()
    return reference


def test_an_upload_is_answered_with_its_reference_and_stored_once(client: TestClient, app: App) -> None:
    reference = upload(client, PDF_BYTES, content_type="application/pdf")
    again = upload(client, PDF_BYTES, content_type="application/pdf")

    key = hashlib.sha256(PDF_BYTES).hexdigest()
    assert reference == again == {
        "key": key, "sha256": key, "size": len(PDF_BYTES), "filename": "invoice.pdf",
        "content_type": "application/pdf", "disposition": "attachment", "content_id": None,
    }  # fmt: skip
    assert app.blobs.get(key) == PDF_BYTES and [i.key for i in app.blobs.list()] == [key]


def test_an_upload_streamed_in_chunks_without_a_length_is_stored(client: TestClient, app: App) -> None:
    data = bytes(range(256)) * 200
    response = client.post(
        "/v1/attachments", content=iter([data[:10_000], data[10_000:]]), params={"filename": "a.bin"}
    )
    assert response.status_code == 201
    assert app.blobs.get(str(response.json()["key"])) == data


@pytest.mark.parametrize("chunked", [False, True])
def test_an_upload_over_the_maximum_gets_413_and_leaves_nothing(
    client: TestClient, app: App, chunked: bool
) -> None:
    data = b"x" * (MAX + 1)
    body = iter([data[:MAX], data[MAX:]]) if chunked else data
    response = client.post("/v1/attachments", content=body, params={"filename": "big.bin"})

    assert response.status_code == 413 and response.json()["limit"] == MAX
    assert list(app.blobs.list()) == []
    incoming = app.settings.effective_blob_dir / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


def test_an_upload_with_a_bad_name_is_refused_before_anything_is_stored(client: TestClient, app: App) -> None:
    response = client.post("/v1/attachments", content=b"x", params={"filename": "../etc/passwd"})
    assert response.status_code == 422 and list(app.blobs.list()) == []


def test_an_email_with_an_uploaded_reference_is_accepted(client: TestClient) -> None:
    reference = upload(client, PDF_BYTES, content_type="application/pdf")
    response = client.post("/v1/emails", json=send_email_payload(attachments=[reference]))
    assert response.status_code == 202, response.text


def test_a_reference_to_a_missing_or_altered_blob_is_refused_with_422(client: TestClient, app: App) -> None:
    missing = {"filename": "x.pdf", "sha256": hashlib.sha256(b"never").hexdigest(), "size": 5}
    response = client.post("/v1/emails", json=send_email_payload(attachments=[missing]))
    assert response.status_code == 422 and "no blob" in response.text

    reference = upload(client, PDF_BYTES)
    path = app.settings.effective_blob_dir / str(reference["key"])[:2] / str(reference["key"])[2:4]
    (path / str(reference["key"])).write_bytes(bytes(reversed(PDF_BYTES)))
    response = client.post("/v1/emails", json=send_email_payload(attachments=[reference]))
    assert response.status_code == 422 and "altered" in response.text


def test_an_email_larger_than_the_provider_takes_gets_413_with_the_limit(client: TestClient) -> None:
    references = [upload(client, bytes([i]) * 60_000, filename=f"part{i}.bin") for i in range(3)]
    response = client.post("/v1/emails", json=send_email_payload(attachments=references))
    assert response.status_code == 413
    assert "takes less than 200000 bytes" in response.json()["error"]
