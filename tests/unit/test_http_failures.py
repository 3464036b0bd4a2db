"""What a transport failure means for a request: httpx's exception types and whether the body went out.

``tests/integration/test_sendgrid_connections.py`` raises each of these for real,
from real sockets; here the rule itself, exhaustively.
"""

from __future__ import annotations

import httpx
import pytest

from emailer.adapters.providers.http_client import NOT_SENT, failure_outcome
from handlers.ports import Outcome

BEFORE_THE_FIRST_BYTE = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
]
WHILE_OR_AFTER_WRITING = [
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
    httpx.LocalProtocolError,
    httpx.CloseError,
    httpx.NetworkError,  # the base classes too: whatever httpx may raise as them
    httpx.TimeoutException,
    httpx.ProtocolError,
    httpx.TransportError,
]


@pytest.mark.parametrize("error", BEFORE_THE_FIRST_BYTE)
@pytest.mark.parametrize("body_written", [False, True])
def test_a_failure_before_the_first_byte_is_not_sent(
    error: type[httpx.TransportError], body_written: bool
) -> None:
    assert failure_outcome(error("boom"), body_written) is Outcome.TRANSIENT


@pytest.mark.parametrize("error", WHILE_OR_AFTER_WRITING)
def test_any_failure_before_the_body_was_all_written_is_not_sent(error: type[httpx.TransportError]) -> None:
    assert failure_outcome(error("boom"), body_written=False) is Outcome.TRANSIENT


@pytest.mark.parametrize("error", WHILE_OR_AFTER_WRITING)
def test_any_other_failure_once_the_body_was_all_written_is_unknown(
    error: type[httpx.TransportError],
) -> None:
    assert failure_outcome(error("boom"), body_written=True) is Outcome.UNKNOWN


def test_every_transport_error_httpx_has_is_classed() -> None:
    """A new httpx exception type must be placed on purpose, not fall through unnoticed."""
    classed = set(BEFORE_THE_FIRST_BYTE) | set(WHILE_OR_AFTER_WRITING)
    every = {
        value
        for value in vars(httpx).values()
        if isinstance(value, type) and issubclass(value, httpx.TransportError)
    }
    assert every <= classed, every - classed
    assert set(NOT_SENT) == set(BEFORE_THE_FIRST_BYTE)
