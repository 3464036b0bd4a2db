"""Hypothesis strategies for SendEmail payloads as a client would send them (JSON-shaped dicts).

They lean towards what the contract should accept, with exotic but legal values
(RTL marks, combining characters, emoji, U+FEFF, values at their length limits,
big and deep ``template_data``, many recipients), and mix in what it must refuse
(NUL, lone surrogates, U+2028, VT, CR/LF, over-long ids, NaN, duplicates across
to/cc/bcc, reserved headers). The properties that use them live in
``tests/unit/test_send_email_properties.py`` and
``tests/integration/test_send_email_storage_properties.py``.

``EMAILER_HYPOTHESIS_EXAMPLES`` sets how many examples each property runs
(small by default, so the suite stays quick).
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("EMAILER_HYPOTHESIS_EXAMPLES", "40"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow "explain"
    derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)

ODD_CHARS = [
    "\u200f", "\u202e", "\u0301", "\U0001f600", "\ufeff", "\u00e9", "\u0130", "\u00df",
    "\t", " ", ";", ",", '"', "'", "<", ">", ":", "\\", "=", "?", "\uffff", "\u05d0",
]  # fmt: skip
"""Exotic characters the contract accepts in every text field."""
BAD_CHARS = [
    "\x00",
    "\ud800",
    "\udfff",
    "\u2028",
    "\u2029",
    "\x0b",
    "\x0c",
    "\x85",
    "\x1c",
    "\x7f",
    "\r",
    "\n",
]
"""Characters a header cannot carry (and NUL and lone surrogates, that nothing can store)."""
BLOBS = [b"", b"%PDF-1.4 \x00\x01", bytes(range(256))]
"""Blobs a reference may name: the tests put them in the blob store first."""


def _chars(bad: bool) -> st.SearchStrategy[str]:
    legal = st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]), st.sampled_from(ODD_CHARS)
    )
    return st.one_of(legal, st.sampled_from(BAD_CHARS)) if bad else legal


def text(min_size: int = 0, max_size: int = 30, bad: bool = False) -> st.SearchStrategy[str]:
    return st.lists(_chars(bad), min_size=min_size, max_size=max_size).map("".join)


def body_text(bad: bool = False) -> st.SearchStrategy[str]:
    """Bodies may carry controls and line breaks, so those are legal here."""
    extra = st.sampled_from(["\r\n", "\n", "\u2028", "\x0b", "\x1b"])
    return st.lists(st.one_of(_chars(bad), extra), max_size=60).map("".join)


def at_limit(limit: int, char: str = "a", bad: bool = False) -> st.SearchStrategy[str]:
    """A value of ``limit`` characters or one less (one more too, if ``bad``)."""
    return st.sampled_from([limit - 1, limit, limit + 1] if bad else [limit - 1, limit]).map(
        lambda n: char * n
    )


def email_ids(bad: bool) -> st.SearchStrategy[str]:
    good = st.one_of(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True),
        st.sampled_from([127, 128]).map(lambda n: "e" + "-" * (n - 2) + "9"),
    )
    return st.one_of(good, st.just("e" * 129), text(min_size=1, max_size=10, bad=True)) if bad else good


ADDRESSES = [
    "ann@example.com", "ANN@example.com", "bob@example.org", "u\u00fc@example.de", "x@xn--mnchen-3ya.de",
    "a.b+c@sub.example.co", "\u7528\u6237@example.cn", "not-an-address", "a@b", "",
]  # fmt: skip


def addresses(allow_duplicates: bool) -> st.SearchStrategy[str]:
    unique = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).map(lambda s: f"{s}@example.net")
    international = st.from_regex(r"[a-z\u00e0-\u00ff\u4e00-\u4e10]{1,8}", fullmatch=True).map(
        lambda s: f"{s}@example.de"
    )
    return (
        st.one_of(unique, st.sampled_from(ADDRESSES))
        if allow_duplicates
        else st.one_of(unique, international)
    )


def display_names(bad: bool) -> st.SearchStrategy[str]:
    """Names may carry anything a header can, but ';' and ',' (SendGrid refuses them)."""
    names = text(max_size=20, bad=bad)
    return names if bad else names.map(lambda n: n.replace(";", ".").replace(",", "."))


def address(bad: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    name = st.one_of(st.none(), display_names(bad), at_limit(256, "\u00e9", bad))
    return st.fixed_dictionaries({"email": addresses(bad)}, optional={"name": name})


def recipients(bad: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    few = st.lists(address(bad), max_size=4, unique_by=None if bad else (lambda a: str(a["email"]).lower()))
    crowd = st.sampled_from([999, 1001]).map(lambda n: [{"email": f"r{i}@example.com"} for i in range(n)])
    return st.one_of(few, crowd) if bad else few


def json_values(bad: bool) -> st.SearchStrategy[Any]:
    numbers = st.one_of(
        st.integers(-(2**53) + 1, 2**53 - 1),
        st.floats(min_value=-(2**52), max_value=2**52, allow_nan=False),
    )
    if bad:
        numbers = st.one_of(numbers, st.floats(), st.integers(), st.sampled_from([1e23, float("nan")]))
    leaves = st.one_of(st.none(), st.booleans(), numbers, text(max_size=20, bad=bad))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(text(max_size=8, bad=bad), children, max_size=4)
        ),
        max_leaves=20,
    )


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep, objects and arrays taking turns (the contract allows 32)."""
    node: Any = {"leaf": "\u202eend"}
    for level in range(2, levels + 1):
        node = {"n": node} if level % 2 == 1 or level == levels else [node]
    return dict(node)


def template_data(bad: bool) -> st.SearchStrategy[dict[str, Any] | None]:
    big = st.sampled_from([900_000, 1_048_560] + ([1_048_600] if bad else [])).map(
        lambda n: {"blob": "x" * n}
    )
    deep = st.sampled_from([31, 32, 33, 200] if bad else [31, 32]).map(nested)
    shaped = st.dictionaries(text(max_size=8, bad=bad), json_values(bad), max_size=5)
    return st.one_of(st.none(), shaped, big, deep)


def attachments(bad: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    names = text(min_size=1, max_size=20, bad=bad)
    if not bad:  # a bare name: no path, no quote
        names = names.map(lambda n: n.replace("/", "_").replace("\\", "_").replace('"', "_")).filter(
            lambda n: n not in (".", "..")
        )
    filename = st.one_of(names, at_limit(255, "\u00e9", bad))
    content_type = st.sampled_from(
        ["application/pdf", "text/plain; charset=utf-8", "image/png", "application/octet-stream"]
        + (["text/plain; name=\x00", "text/plain;\u2028x", "no-slash"] if bad else [])
    )
    inline = st.binary(max_size=64).map(lambda b: {"content": base64.b64encode(b).decode()})
    reference = st.sampled_from(BLOBS).map(lambda b: {"sha256": hashlib.sha256(b).hexdigest()})
    one = st.builds(
        lambda source, name, kind, cid: {
            **source,
            "filename": name,
            "content_type": kind,
            **({"disposition": "inline", "content_id": cid} if cid else {}),
        },
        st.one_of(inline, reference),
        filename,
        content_type,
        st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9.@-]{1,20}", fullmatch=True)),
    )
    return st.lists(one, max_size=3)


def headers(bad: bool) -> st.SearchStrategy[dict[str, str]]:
    names = st.from_regex(r"X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)
    if bad:
        names = st.one_of(names, st.sampled_from(["Sender", "content-type", "X-Custom\n", "X Space", "X:y"]))
    values = st.one_of(text(max_size=30, bad=bad), at_limit(998, "\u05d0", bad))
    return st.dictionaries(names, values, max_size=3)


def send_at() -> st.SearchStrategy[str | None]:
    zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    aware = st.builds(
        lambda base, zone: base.astimezone(zone).isoformat(),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
        zones,
    )
    return st.one_of(st.none(), aware)


@st.composite
def payloads(draw: st.DrawFn, bad: bool | None = None) -> dict[str, Any]:
    """One SendEmail as JSON-shaped data; ``bad`` draws from the refused values too (None: either)."""
    if bad is None:
        bad = draw(st.booleans())
    payload: dict[str, Any] = {
        "email_id": draw(email_ids(bad)),
        "from": draw(address(bad)),
        "to": draw(recipients(bad)),
    }
    for key, strategy in [
        ("cc", recipients(bad)),
        ("bcc", recipients(bad)),
        ("reply_to", address(bad)),
        ("subject", st.one_of(text(min_size=1, max_size=40, bad=bad), at_limit(998, "\U0001f600", bad))),
        ("text", body_text(bad)),
        ("html", body_text(bad)),
        ("template_id", st.from_regex(r"d-[a-z0-9]{1,12}", fullmatch=True)),
        ("template_data", template_data(bad)),
        ("attachments", attachments(bad)),
        ("headers", headers(bad)),
        (
            "categories",
            st.lists(text(min_size=1, max_size=12, bad=bad), max_size=11 if bad else 10, unique=not bad),
        ),
        (
            "metadata",
            st.dictionaries(text(min_size=1, max_size=10, bad=bad), text(max_size=20, bad=bad), max_size=4),
        ),
        ("send_at", send_at()),
    ]:
        if draw(st.booleans()):
            payload[key] = draw(strategy)
    if bad and draw(st.booleans()):
        payload["metadata"] = {"big": "m" * draw(st.sampled_from([9_900, 9_990, 10_000]))}
    if not bad:  # what the contract needs of a whole email, so that most of these are accepted
        payload = _whole(payload, draw)
    return payload


def _whole(payload: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """Distinct recipients across to/cc/bcc, a body, a subject unless a template gives one."""
    seen: set[str] = set()
    for kind in ("to", "cc", "bcc"):
        kept = []
        for a in payload.get(kind, []):
            if str(a["email"]).lower() not in seen:
                seen.add(str(a["email"]).lower())
                kept.append(a)
        payload[kind] = kept
    if not payload["to"]:
        payload["to"] = [{"email": "first@example.com"}] if "first@example.com" not in seen else []
    if not (payload.get("text") or payload.get("html") or payload.get("template_id")):
        payload["text"] = draw(body_text().filter(bool))
    if payload.get("subject") is None and not payload.get("template_id"):
        payload["subject"] = draw(text(min_size=1, max_size=20))
    return payload


def has_surrogates(value: Any) -> bool:
    """Whether ``value`` holds a lone surrogate (it cannot even be encoded as JSON in UTF-8)."""
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(has_surrogates(k) or has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogates(v) for v in value)
    return False
