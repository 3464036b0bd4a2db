"""The constrained field types messages are built from, and the bounds that keep them storable.

One validation decides, the same wherever a command arrives (the HTTP gateway
or the input queue): what the contract accepts, PostgreSQL can store, an RFC
5322 header can carry and the provider will not refuse. Every bound is here,
as a named constant, so a caller can read what is allowed.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic.networks import import_email_validator, validate_email
from pydantic_core import core_schema

MAX_JSON_DEPTH = 32
"""Deepest nesting of ``template_data`` (objects and arrays); well below any JSON parser's own limit."""
MAX_TEMPLATE_DATA_BYTES = 1024 * 1024
"""``template_data`` encoded as JSON (UTF-8)."""
MAX_BODY_CHARS = 10 * 1024 * 1024
"""``text`` and ``html`` each, in characters."""
MAX_HEADER_VALUE_CHARS = 998
"""RFC 5322's line limit; longer values would have to be folded by hand."""
MAX_SAFE_INTEGER = 2**53 - 1
"""I-JSON (RFC 7493): numbers beyond this (and NaN, infinities) do not survive every JSON reader.

PostgreSQL's jsonb reads ``1e+23`` back as the integer 10**23, not the float it
was; SendGrid's body cannot carry NaN at all. ``template_data`` keeps to I-JSON.
"""

# PostgreSQL refuses NUL in text and jsonb; a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What a header line cannot carry: C0 controls but TAB (NUL, CR, LF, VT, FF, FS, ...), DEL, C1 controls
# (NEL among them) and the Unicode line and paragraph separators.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext: printable ASCII except ':'
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,255}")  # no <, >, ", spaces


def storable(value: str) -> str:
    """Refuse what the database cannot store: NUL and lone surrogates."""
    found = _UNSTORABLE.search(value)
    if found:
        raise ValueError(f"must not contain the character U+{ord(found.group()):04X}")
    return value


def header_safe(value: str) -> str:
    """Refuse what a mail header cannot carry: CR, LF and every other control or line separator."""
    found = _NOT_IN_HEADER.search(value)
    if found:
        char = found.group()
        if char in "\r\n":
            raise ValueError("must not contain CR or LF characters (header injection)")
        raise ValueError(f"must not contain the control or line-separator character U+{ord(char):04X}")
    return value


def no_crlf(value: str) -> str:
    """The header rule under its old name."""
    return header_safe(value)


def header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a valid RFC 5322 field name (printable ASCII, no ':')")
    return value


def content_id(value: str) -> str:
    if not _CONTENT_ID.fullmatch(value):
        raise ValueError("must be 1-255 characters of a Content-ID (no spaces, quotes or angle brackets)")
    return value


def file_name(value: str) -> str:
    header_safe(value)
    if any(c in value for c in '/\\"') or value in (".", ".."):
        raise ValueError("must be a bare file name, without a path or '\"'")
    return value


def display_name(value: str) -> str:
    header_safe(value)
    if ";" in value or "," in value:
        raise ValueError("must not contain ';' or ',' (SendGrid refuses them in a name)")
    return value


def normalized_email(value: str) -> str:
    """``pydantic.EmailStr``'s check and normalisation, with its costly part remembered.

    A pure function of the text (no DNS). The same few senders and cc addresses
    come again in every email, and the same few domains in nearly every address:
    the domain's check (IDNA, UTS #46, character by character: most of the cost)
    is made once per distinct domain, by checking ``a@<domain>`` in full. A local
    part that is plain ASCII dot-atom text needs no more than email-validator's
    own pattern for it and the length rules; anything else (non-ASCII text,
    quoted local parts, a display name, a mailbox name email-validator
    lowercases, a domain it refuses) goes through the whole check, remembered
    per distinct text. A property test holds this equal to ``validate_email``,
    results and refusals alike. A refused address raises, and is not remembered.
    """
    local, at, domain = value.rpartition("@")
    if (
        at
        and len(value) <= _ADDRESS_MAX
        and value.isascii()
        and len(local) <= _LOCAL_PART_MAX
        and _DOT_ATOM.match(local)
        and local.lower() not in _LOWERED_LOCALS
    ):
        try:
            normalized_domain = _normalized_domain(domain)
        except ValueError:
            normalized_domain = None  # refused: the whole check says why, about the whole address
        if normalized_domain is not None and normalized_domain.isascii():
            address = f"{local}@{normalized_domain}"
            if len(address) <= _ADDRESS_MAX:
                return address
    return _normalized_whole(value)


@functools.lru_cache(maxsize=8192)
def _normalized_whole(value: str) -> str:
    return validate_email(value)[1]


@functools.lru_cache(maxsize=4096)
def _normalized_domain(domain: str) -> str:
    """The domain as ``validate_email`` normalises it, from the check of a one-letter address there."""
    return validate_email(f"a@{domain}")[1].partition("@")[2]


def _email_validator_rules() -> tuple[re.Pattern[str], frozenset[str], int, int]:
    import_email_validator()
    from email_validator import rfc_constants

    return (
        rfc_constants.DOT_ATOM_TEXT,
        frozenset(rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES),
        rfc_constants.LOCAL_PART_MAX_LENGTH,
        rfc_constants.EMAIL_MAX_LENGTH,
    )


_DOT_ATOM, _LOWERED_LOCALS, _LOCAL_PART_MAX, _ADDRESS_MAX = _email_validator_rules()


class _CheckedOnce:
    """``EmailStr`` (the same validation, errors and JSON schema), through ``normalized_email``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: type[Any], _handler: GetCoreSchemaHandler) -> Any:
        import_email_validator()
        return core_schema.no_info_after_validator_function(normalized_email, core_schema.str_schema())

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        field_schema = handler(schema)
        field_schema.update(type="string", format="email")
        return field_schema


def bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    """Template data: nested at most ``MAX_JSON_DEPTH`` deep, storable strings, bounded size."""
    _walk(value, depth=1, path="")
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_TEMPLATE_DATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_TEMPLATE_DATA_BYTES}")
    return value


def _walk(node: Any, depth: int, path: str) -> None:
    """Check strings, keys and numbers; ``depth`` counts objects and arrays, checked before descending."""
    if isinstance(node, str):
        _storable_at(node, path)
        return
    if node is None or isinstance(node, bool):
        return
    if isinstance(node, int | float):
        _number_at(node, path)
        return
    if not isinstance(node, dict | list):
        raise ValueError(f"{path or 'the top'}: a {type(node).__name__} is not a JSON value")
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels (at {path or 'the top'})")
    if isinstance(node, dict):
        for key, child in node.items():
            if not isinstance(key, str):
                raise ValueError(f"{path or 'the top'}: key {key!r} is not a string")
            where = f"{path}.{_shown(key)}" if path else _shown(key)
            _storable_at(key, where)
            _walk(child, depth + 1, where)
    else:
        for index, child in enumerate(node):
            _walk(child, depth + 1, f"{path}[{index}]")


def _shown(key: str) -> str:
    """A key as an error message may carry it: a lone surrogate would make pydantic's own message fail."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _number_at(number: float, path: str) -> None:
    if not math.isfinite(number) or abs(number) > MAX_SAFE_INTEGER:
        raise ValueError(
            f"{path or 'a value'}: {number!r} is not a number every JSON reader keeps "
            f"(finite, at most {MAX_SAFE_INTEGER} in size)"
        )


def _storable_at(text: str, path: str) -> None:
    try:
        storable(text)
    except ValueError as exc:
        raise ValueError(f"{path or 'a key'}: {exc}") from None


# The same rules as JSON Schema patterns (ECMA-262 and Python ``re`` alike: ``\\uXXXX`` escapes only),
# so that a schema alone says what the validators above enforce. ``json_schema_extra`` changes the
# exported schema only; validation stays with the validators. Lone surrogates are left out of the
# patterns: Rust's and other UTF-8 regex engines refuse a surrogate range (schemathesis among them).
_UNSTORABLE_CLASS = r"\u0000"
_NOT_IN_HEADER_CLASS = r"\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029"
STORABLE_PATTERN = f"^[^{_UNSTORABLE_CLASS}]*$"
HEADER_SAFE_PATTERN = f"^[^{_NOT_IN_HEADER_CLASS}]*$"
HEADER_NAME_PATTERN = f"^{_HEADER_NAME.pattern}$"
CONTENT_ID_PATTERN = f"^{_CONTENT_ID.pattern}$"
FILE_NAME_PATTERN = f'^[^/\\\\"{_NOT_IN_HEADER_CLASS}]*$'
DISPLAY_NAME_PATTERN = f"^[^;,{_NOT_IN_HEADER_CLASS}]*$"


def _pattern(pattern: str, **more: Any) -> Any:
    return Field(json_schema_extra={"pattern": pattern, **more})


EmailAddress = Annotated[str, _CheckedOnce]
"""An email address as ``pydantic.EmailStr`` checks and normalises it, each distinct text checked once."""
# Length bounds stand before the validators so that pydantic words them in characters.
Text = Annotated[str, _pattern(STORABLE_PATTERN), AfterValidator(storable)]
"""Any text that is stored: no NUL, no lone surrogates."""
HeaderText = Annotated[str, _pattern(HEADER_SAFE_PATTERN), AfterValidator(header_safe)]
"""Text that ends up in a mail header: no control or line-separator characters."""
HeaderName = Annotated[str, _pattern(HEADER_NAME_PATTERN), AfterValidator(header_name)]
ContentId = Annotated[str, _pattern(CONTENT_ID_PATTERN), AfterValidator(content_id)]
FileName = Annotated[
    str,
    Field(min_length=1, max_length=255),
    _pattern(FILE_NAME_PATTERN, **{"not": {"enum": [".", ".."]}}),
    AfterValidator(file_name),
]
DisplayName = Annotated[
    str, Field(max_length=256), _pattern(DISPLAY_NAME_PATTERN), AfterValidator(display_name)
]
Body = Annotated[str, Field(max_length=MAX_BODY_CHARS), _pattern(STORABLE_PATTERN), AfterValidator(storable)]
TemplateData = Annotated[dict[str, Any], AfterValidator(bounded_json)]
# Whitespace around a header value does not survive it (parsers drop what follows the colon), so
# the contract strips it: what is stored is what the recipient's header will say.
Subject = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    Field(min_length=1, max_length=MAX_HEADER_VALUE_CHARS),
    _pattern(HEADER_SAFE_PATTERN),
    AfterValidator(header_safe),
]
HeaderValue = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    Field(max_length=MAX_HEADER_VALUE_CHARS),
    _pattern(HEADER_SAFE_PATTERN),
    AfterValidator(header_safe),
]
Category = Annotated[
    str, Field(min_length=1, max_length=255), _pattern(HEADER_SAFE_PATTERN), AfterValidator(header_safe)
]
Reason = Annotated[str, Field(max_length=500), _pattern(HEADER_SAFE_PATTERN), AfterValidator(header_safe)]
MetadataKey = Annotated[
    str, Field(min_length=1, max_length=100), _pattern(STORABLE_PATTERN), AfterValidator(storable)
]
MetadataValue = Annotated[str, Field(max_length=8192), _pattern(STORABLE_PATTERN), AfterValidator(storable)]
