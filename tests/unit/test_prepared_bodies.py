"""Bodies built in ``prepare`` are kept for the ``send`` of the same email object, and only while it lives."""

from __future__ import annotations

import gc
from dataclasses import replace

from emailer.adapters.providers.prepared import PreparedBodies
from emailer.adapters.providers.sendgrid import SendGridProvider
from tests.factories import outgoing_email


def test_a_body_is_taken_once_by_the_very_email_it_was_built_for() -> None:
    bodies: PreparedBodies[bytes] = PreparedBodies()
    email = outgoing_email("one")
    equal = replace(email)  # the same fields, another object: not the one prepared
    bodies.keep(email, b"body")
    assert bodies.take(equal) is None
    assert bodies.take(email) == b"body"
    assert bodies.take(email) is None


def test_a_body_goes_with_its_email() -> None:
    bodies: PreparedBodies[bytes] = PreparedBodies()
    email = outgoing_email("gone")
    bodies.keep(email, b"body")
    assert len(bodies) == 1
    del email
    gc.collect()
    assert len(bodies) == 0  # an email prepared and never sent (held back, a failed claim) leaves nothing


def test_the_sendgrid_provider_sends_the_body_it_prepared_and_keeps_none_after() -> None:
    provider = SendGridProvider(api_key="SG.test", base_url="http://127.0.0.1:9")
    email = outgoing_email("prepared")
    try:
        provider.prepare(email)
        assert len(provider._prepared) == 1
        provider.send(email)  # nothing listens on port 9: not sent, but the body was taken
        assert len(provider._prepared) == 0
    finally:
        provider.close()
