"""SendGrid's Email Activity Feed, as far as the sandbox keeps it: ``GET /v3/messages?query=...&limit=N``.

The query language is SendGrid's documented one: ``field="value"`` and
``field LIKE 'prefix%'`` conditions over ``msg_id``, ``from_email``,
``to_email``, ``subject``, ``status`` and ``unique_args['name']`` (the custom
args of the message), joined with ``AND`` / ``OR`` (AND binds tighter) and
grouped with parentheses. One entry per message SendGrid would have made (one
per recipient), newest first; an entry appears as soon as the request was
accepted (SendGrid's own feed lags by seconds to minutes: the client's grace
period is for that). A query the parser cannot read is a 400, as SendGrid's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]
Condition = Callable[[Entry], bool]

FIELDS = ("msg_id", "from_email", "to_email", "subject", "status")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<and>AND\b) | (?P<or>OR\b) | (?P<like>LIKE\b) | (?P<eq>=) |
        (?P<args>unique_args\['(?P<arg>[^'\]]+)'\]) |
        (?P<field>[a-z_]+) |
        "(?P<dq>[^"]*)" | '(?P<sq>[^']*)' | \u201c(?P<curly>[^\u201d]*)\u201d
    )""",
    re.VERBOSE | re.IGNORECASE,
)


class QueryError(ValueError):
    """The query is not in SendGrid's syntax (the message says where)."""


@dataclass
class _Token:
    kind: str
    value: str


def _tokens(query: str) -> list[_Token]:
    tokens, position = [], 0
    query = query.rstrip()
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise QueryError(f"cannot read the query at character {position}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind in ("args", "arg"):
            tokens.append(_Token("args", match.group("arg")))
        elif kind in ("dq", "sq", "curly"):
            tokens.append(_Token("value", match.group(kind)))
        elif kind in ("and", "or", "like"):
            tokens.append(_Token(kind, kind))
        else:
            tokens.append(_Token(kind, match.group(kind)))
    return tokens


class _Parser:
    """or := and (OR and)* ; and := term (AND term)* ; term := '(' or ')' | subject (= | LIKE) value."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0

    def parse(self) -> Condition:
        if not self.tokens:
            return lambda entry: True
        condition = self._or()
        if self.at != len(self.tokens):
            raise QueryError(f"unexpected {self.tokens[self.at].value!r}")
        return condition

    def _next(self, *kinds: str) -> _Token:
        if self.at >= len(self.tokens) or self.tokens[self.at].kind not in kinds:
            found = self.tokens[self.at].value if self.at < len(self.tokens) else "the end"
            raise QueryError(f"expected {' or '.join(kinds)}, found {found!r}")
        self.at += 1
        return self.tokens[self.at - 1]

    def _peek(self, kind: str) -> bool:
        return self.at < len(self.tokens) and self.tokens[self.at].kind == kind

    def _or(self) -> Condition:
        parts = [self._and()]
        while self._peek("or"):
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda e: any(p(e) for p in parts)

    def _and(self) -> Condition:
        parts = [self._term()]
        while self._peek("and"):
            self.at += 1
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else lambda e: all(p(e) for p in parts)

    def _term(self) -> Condition:
        if self._peek("lparen"):
            self.at += 1
            inner = self._or()
            self._next("rparen")
            return inner
        subject = self._next("field", "args")
        if subject.kind == "field" and subject.value.lower() not in FIELDS:
            raise QueryError(f"unknown query type {subject.value!r}")
        like = self._next("eq", "like").kind == "like"
        value = self._next("value").value
        read = _reader(subject)
        if like:
            pattern = re.compile("^" + ".*".join(re.escape(p) for p in value.split("%")) + "$", re.DOTALL)
            return lambda e: (v := read(e)) is not None and pattern.match(v) is not None
        return lambda e: read(e) == value


def _reader(subject: _Token) -> Callable[[Entry], str | None]:
    if subject.kind == "args":
        name = subject.value
        return lambda e: e["_unique_args"].get(name)
    name = subject.value.lower()
    return lambda e: e.get(name)


def parse_query(query: str) -> Condition:
    """A predicate over feed entries; raises ``QueryError`` for what SendGrid would refuse."""
    return _Parser(_tokens(query)).parse()


def feed_entries(message_id: str, received_at: str, body: dict[str, Any]) -> Iterable[Entry]:
    """The feed's entries for one accepted request: one per recipient, with its custom args."""
    top_args = body.get("custom_args") if isinstance(body.get("custom_args"), dict) else {}
    sender = body.get("from", {}).get("email") if isinstance(body.get("from"), dict) else None
    for p_index, personalization in enumerate(body.get("personalizations") or []):
        if not isinstance(personalization, dict):
            continue
        args = {**(top_args or {}), **(personalization.get("custom_args") or {})}
        subject = personalization.get("subject", body.get("subject"))
        addressees = [
            *personalization.get("to", []),
            *personalization.get("cc", []),
            *personalization.get("bcc", []),
        ]
        for r_index, addressee in enumerate(addressees):
            yield {
                "from_email": sender,
                "msg_id": f"{message_id}.sandbox{p_index}.{r_index}.0",
                "subject": subject,
                "to_email": addressee.get("email") if isinstance(addressee, dict) else None,
                "status": "delivered",
                "opens_count": 0,
                "clicks_count": 0,
                "last_event_time": received_at,
                "_unique_args": {str(k): str(v) for k, v in args.items()},
            }


def public(entry: Entry) -> Entry:
    """The entry as the API shows it (custom args are not part of a list entry)."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}
