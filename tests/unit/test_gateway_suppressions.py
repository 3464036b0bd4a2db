"""/v1/suppressions behind the gateway's tokens: read scope to look, send scope to add or remove."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_gateway_hardening import (  # noqa: F401 - the fixture that builds a gateway
    READ_TOKEN,
    SEND_TOKEN,
    MakeClient,
    bearer,
    make_client,
)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:  # noqa: F811
    return make_client(api_tokens=f"send:{SEND_TOKEN}, read:{READ_TOKEN}")


def test_add_look_up_list_and_remove_each_with_its_scope(client: TestClient) -> None:
    send, read = bearer(SEND_TOKEN), bearer(READ_TOKEN)
    assert client.get("/v1/suppressions/ana@example.com", headers=read).status_code == 404
    assert client.put("/v1/suppressions/Ana@Example.com", headers=read).status_code == 401
    added = client.put("/v1/suppressions/Ana@Example.com", params={"note": "asked by phone"}, headers=send)
    assert added.status_code == 201
    assert added.json()["address"] == "ana@example.com" and added.json()["reason"] == "manual"
    assert client.put("/v1/suppressions/ana@example.com", headers=send).status_code == 200
    assert client.get("/v1/suppressions/ana@example.com", headers=send).status_code == 401
    found = client.get("/v1/suppressions/ANA@example.com", headers=read).json()
    assert found["detail"] == "asked by phone" and found["source_email_id"] is None
    page = client.get("/v1/suppressions", params={"limit": 1}, headers=read).json()
    assert [s["address"] for s in page["suppressions"]] == ["ana@example.com"]
    assert page["next_after"] == "ana@example.com"
    assert client.delete("/v1/suppressions/ana@example.com", headers=read).status_code == 401
    assert client.delete("/v1/suppressions/ana@example.com", headers=send).status_code == 204
    assert client.delete("/v1/suppressions/ana@example.com", headers=send).status_code == 404


def test_only_an_address_can_be_listed(client: TestClient) -> None:
    response = client.put("/v1/suppressions/not-an-address", headers=bearer(SEND_TOKEN))
    assert response.status_code == 400 and response.json() == {"error": "not an email address"}


def test_the_openapi_document_describes_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/suppressions/{address}"]) == {"get", "put", "delete"}
    assert "get" in paths["/v1/suppressions"]
