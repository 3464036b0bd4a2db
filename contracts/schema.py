"""JSON Schema of every message, so services in other languages can build them."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.base import message_types


def write_schemas(directory: Path) -> list[Path]:
    """Write ``<TypeName>.schema.json`` for every message into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cls in sorted(message_types().items()):
        schema = cls.model_json_schema(by_alias=True)
        schema["$id"] = f"urn:emailer:contracts:{name}"
        schema["x-message-intent"] = cls.intent
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
