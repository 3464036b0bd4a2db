"""What a service in another language does with an exported schema: build a message from it alone.

``minimal_instance`` takes only what the schema says is required, picking the
first branch of every ``anyOf``; strings that must match a pattern get the
simplest match hypothesis finds. ``generation_schema`` trims the schema for
hypothesis-jsonschema (see its docstring) without making it any looser.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import find
from hypothesis import strategies as st

from contracts.fields import MAX_JSON_DEPTH

GENERATED_TEMPLATE_DEPTH = 3


def minimal_instance(schema: dict[str, Any]) -> Any:
    return _build(schema, schema)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = {**root["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _merge(a: dict[str, Any], b: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    a, b = _resolve(a, root), _resolve(b, root)
    merged = {**a, **{k: v for k, v in b.items() if k not in ("properties", "required")}}
    required = sorted({*a.get("required", []), *b.get("required", [])})
    properties = dict(a.get("properties", {}))
    for name, sub in b.get("properties", {}).items():
        properties[name] = _merge(properties[name], sub, root) if name in properties else sub
    if required:
        merged["required"] = required
    if properties:
        merged["properties"] = properties
    return merged


def _build(node: dict[str, Any], root: dict[str, Any]) -> Any:
    node = _resolve(node, root)
    for part in node.pop("allOf", []):
        node = _merge(node, part, root)
    if "anyOf" in node:
        first, rest = node["anyOf"][0], {k: v for k, v in node.items() if k != "anyOf"}
        node = _merge(rest, first, root) if rest.get("properties") or rest.get("type") else first
        return _build(node, root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object" or "properties" in node:
        return {name: _build(node["properties"][name], root) for name in node.get("required", [])}
    if kind == "array":
        return [_build(node["items"], root) for _ in range(node.get("minItems", 0))]
    if kind == "string":
        return _string(node)
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    raise AssertionError(f"cannot build an instance of {node}")


def _string(node: dict[str, Any]) -> str:
    fmt = node.get("format")
    if fmt == "email":
        return "someone@example.com"
    if fmt == "date-time":
        return "2030-01-01T00:00:00Z"
    low: int = node.get("minLength", 0)
    if "pattern" not in node:
        return "a" * low
    high = node.get("maxLength", 10**9)
    # JSON Schema patterns are ECMA-262: ``$`` is the end of the string. Python's ``$`` also matches
    # before a final newline, so the anchors are dropped for a full match instead.
    pattern: str = node["pattern"].removeprefix("^").removesuffix("$")
    strategy = st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    found: str = find(strategy, lambda _: True)
    return found


def generation_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema hypothesis-jsonschema is given: the same rules, two practical cuts.

    * ``$id`` goes: hypothesis-jsonschema resolves ``#/$defs/...`` against it and takes
      the ``urn:`` for a remote reference it refuses to fetch.
    * Template data nests at most ``GENERATED_TEMPLATE_DEPTH`` deep instead of 32:
      hypothesis-jsonschema inlines every ``$ref`` and the 32-level chain (each level
      referenced by its object and its array branch) would inline 2**31 times.
      Deeper nesting is covered by the unit tests of ``bounded_json``.
    Both make the schema only stricter, so whatever it generates the full one allows.
    """
    return _trimmed(schema)


def generation_branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """``generation_schema`` once per branch of a top-level ``anyOf``, the branch merged in.

    The union of the branches is the schema; hypothesis-jsonschema draws from a
    top-level ``anyOf`` by filtering whole objects through a validator, which is
    some ten times slower than drawing each branch directly.
    """
    trimmed = _trimmed(schema)
    branches = trimmed.pop("anyOf", None)
    if not branches:
        return [trimmed]
    merged_branches = []
    for branch in branches:
        merged = copy.deepcopy(trimmed)
        merged["required"] = sorted({*merged.get("required", []), *branch.get("required", [])})
        for name, rule in branch.get("properties", {}).items():
            merged["properties"][name] = {**merged["properties"][name], **rule}
        merged_branches.append(merged)
    return merged_branches


def _trimmed(schema: dict[str, Any]) -> dict[str, Any]:
    trimmed = copy.deepcopy(schema)
    trimmed.pop("$id", None)
    defs = trimmed.get("$defs", {})
    last = f"TemplateValueAtDepth{MAX_JSON_DEPTH + 1}"
    if last in defs:
        for depth in range(GENERATED_TEMPLATE_DEPTH + 1, MAX_JSON_DEPTH + 1):
            del defs[f"TemplateValueAtDepth{depth}"]
        defs[f"TemplateValueAtDepth{GENERATED_TEMPLATE_DEPTH + 1}"] = defs.pop(last)
    return trimmed
