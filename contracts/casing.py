"""Property names in another casing: the PascalCase a .NET service's System.Text.Json writes and reads.

The contracts name their fields in snake_case (``email_id``, ``from``). An
NServiceBus endpoint serializes its classes with System.Text.Json, which by
default writes the C# property names as they are (``EmailId``, ``From``) and
reads them case-sensitively. Both directions are here, in one place, driven by
the models: only the names of model fields change; the keys of data a field
holds (``metadata``, ``headers``, ``template_data``) are the sender's and stay
as they are.

* ``to_pascal(model, data)``: a message as a .NET subscriber reads it.
* ``from_other_casing(model, data)``: a message whose keys name the fields in
  another casing (``EmailId``, ``emailId``, ``EMAIL_ID``) with the contract's
  names; a key already spelled as the contract spells it wins. A ``null`` under a
  renamed key is dropped (System.Text.Json writes every unset property as
  ``null``; the contract's default then applies, as when the field is absent).
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel


def pascal(name: str) -> str:
    """``email_id`` -> ``EmailId``, ``from`` -> ``From``, ``sha256`` -> ``Sha256``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _folded(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def to_pascal(model: type[BaseModel], data: Any) -> Any:
    """``data`` (the model dumped by alias, as JSON types) with every field name in PascalCase."""
    if not isinstance(data, dict):
        return data
    fields = _fields(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        nested = fields.get(key)
        if nested is None:
            out[key] = value
            continue
        out[pascal(key)] = _each(nested[1], value, to_pascal)
    return out


def from_other_casing(model: type[BaseModel], data: Any) -> Any:
    """``data`` with keys that name a field in another casing renamed to the contract's name."""
    if not isinstance(data, dict):
        return data
    fields = _fields(model)
    by_folded = {_folded(name): name for name in fields}
    out: dict[str, Any] = {}
    renamed: dict[str, Any] = {}
    for key, value in data.items():
        if key in fields:
            out[key] = _each(fields[key][1], value, from_other_casing)
            continue
        name = by_folded.get(_folded(key)) if isinstance(key, str) else None
        if name is None:
            out[key] = value  # unknown: the model ignores it
        elif value is not None:
            renamed.setdefault(name, _each(fields[name][1], value, from_other_casing))
    for name, value in renamed.items():
        out.setdefault(name, value)  # the contract's own spelling wins
    return out


def needs_renaming(model: type[BaseModel], data: Any) -> bool:
    """True if some key of ``data`` names a field of ``model`` in another casing."""
    if not isinstance(data, dict):
        return False
    fields = _fields(model)
    folded = {_folded(name) for name in fields}
    return any(isinstance(k, str) and k not in fields and _folded(k) in folded for k in data)


def _each(nested: type[BaseModel] | None, value: Any, convert: Any) -> Any:
    if nested is None:
        return value
    if isinstance(value, list):
        return [convert(nested, item) for item in value]
    return convert(nested, value)


@cache
def _fields(model: type[BaseModel]) -> dict[str, tuple[str, type[BaseModel] | None]]:
    """Field name on the wire (its alias) -> (python name, the model it holds, if any)."""
    found: dict[str, tuple[str, type[BaseModel] | None]] = {}
    for name, info in model.model_fields.items():
        found[info.alias or name] = (name, _model_in(info.annotation))
    return found


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds directly, in a list, or optionally (``X``, ``list[X]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType) or origin is typing.Annotated:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
