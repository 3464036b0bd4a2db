"""Fault tests run on the end-to-end stack: the same fixtures as tests/e2e."""

from tests.e2e.conftest import database_url, sandbox, sandbox_client, stack, tap  # noqa: F401
