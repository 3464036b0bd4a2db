"""schemathesis over the gateway's own /openapi.json, against a running ``emailer run``, open and locked.

What it checks: no server error, every status answered is documented, every
response matches its documented schema, content types and headers. (Positive
data acceptance is left out until the exported schema carries every rule of the
contract; that is the contracts work.) A small example count keeps CI quick;
``EMAILER_FUZZ_EXAMPLES`` raises it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.schemas import BaseSchema

from tests.e2e.harness import Process, free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-token-0123456789abcdef"
EXAMPLES = int(os.environ.get("EMAILER_FUZZ_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _running_gateway(tmp: Path, **env: str) -> Iterator[str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILER_")}
    full_env.update({"EMAILER_VAR_DIR": str(tmp / "var"), "EMAILER_LOG_LEVEL": "WARNING", **env})
    process = Process(["run", "--port", str(port)], full_env, tmp)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, what="emailer run to answer /healthz")
        yield base
    finally:
        process.stop()


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    for base in _running_gateway(tmp_path_factory.mktemp("open")):
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


@pytest.fixture(scope="module")
def locked_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    for base in _running_gateway(tmp_path_factory.mktemp("locked"), EMAILER_API_TOKENS=TOKEN):
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def fuzz(schema: BaseSchema, headers: dict[str, str] | None = None) -> list[str]:
    """Run every operation's generated cases with the checks; the operations that were run."""
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here, loudly
        if _streams(operation.definition.raw):
            continue  # an event stream never ends by itself; tests/unit/test_event_stream.py covers them

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS, headers=headers)

        run()
        ran.append(f"{operation.method.upper()} {operation.path}")
    return ran


def _streams(operation: dict[str, Any]) -> bool:
    ok = operation.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def test_open_gateway_conforms_to_its_openapi(open_gateway: BaseSchema) -> None:
    ran = fuzz(open_gateway)
    assert "POST /v1/emails" in ran and "GET /asyncapi.json" in ran


def test_locked_gateway_conforms_with_and_without_a_token(locked_gateway: BaseSchema) -> None:
    assert "GET /v1/emails/{email_id}" in fuzz(locked_gateway, {"Authorization": f"Bearer {TOKEN}"})
    fuzz(locked_gateway)
