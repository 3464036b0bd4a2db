"""``contracts.fields.normalized_email``: pydantic's ``EmailStr`` check with the domain's part remembered.

It must say exactly what ``pydantic.networks.validate_email`` says, for every
text: the same normalised address, or a refusal. Hypothesis draws addresses
from the characters that matter (dot-atom text, quotes, spaces, dots, brackets,
non-ASCII letters, upper case, the mailbox names email-validator lowercases,
special-use and IDNA domains, lengths around the limits).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic.networks import validate_email

from contracts.fields import normalized_email

LOCAL_CHARS = "abcXYZ09._+-!#$%&'*/=?^`{|}~ \"\\(),:;<>@[]é"
DOMAIN_CHARS = "abcXYZ09.-_ é[]"
DOMAINS = [
    "example.com",
    "Example.COM",
    "sub.example.org",
    "localhost",
    "example.test",
    "example.invalid",
    "xn--bcher-kva.example",
    "bücher.example",
    "[127.0.0.1]",
    "a" * 63 + ".com",
    "a" * 64 + ".com",
    "example.com.",
    "-bad.example",
    "",
]


def _said(function: object, value: str) -> tuple[str, str]:
    try:
        return ("ok", function(value))  # type: ignore[operator]
    except ValueError as exc:
        return ("refused", str(exc))


local_parts = st.one_of(
    st.text(LOCAL_CHARS, max_size=70),
    st.sampled_from(["postmaster", "Abuse", "INFO", "customer1", "a" * 64, "a" * 65, "first.last"]),
)
domains = st.one_of(st.sampled_from(DOMAINS), st.text(DOMAIN_CHARS, max_size=70))


@settings(max_examples=600, deadline=None)
@given(local=local_parts, domain=domains, padding=st.sampled_from(["", " ", "  "]))
@example(local="a" * 64, domain="b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com", padding="")
@example(local="Customer1", domain="Example.COM", padding="")
@example(local="postmaster", domain="example.com", padding="")
def test_says_what_validate_email_says(local: str, domain: str, padding: str) -> None:
    value = f"{padding}{local}@{domain}{padding}"
    assert _said(normalized_email, value) == _said(lambda v: validate_email(v)[1], value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Customer1@Example.COM", "Customer1@example.com"),  # the domain lowercased, the local part kept
        ("Postmaster@example.com", "postmaster@example.com"),  # a mailbox name email-validator lowercases
        ("a@xn--bcher-kva.example", "a@bücher.example"),
    ],
)
def test_normalises_as_email_str_does(value: str, expected: str) -> None:
    assert normalized_email(value) == expected


@pytest.mark.parametrize(
    "value", ["a@localhost", "a@example.test", "a@[127.0.0.1]", "a..b@example.com", "@x.org"]
)
def test_refuses_what_email_str_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalized_email(value)
