"""What ops deploy agrees with itself: the RabbitMQ definitions use the example configuration's vhost."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]


def test_the_definitions_are_in_the_vhost_the_example_connects_to() -> None:
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "ops" / "emailer.env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    vhost = unquote(urlsplit(env["EMAILER_BUS_URL"].split()[0]).path.lstrip("/")) or "/"
    definitions = json.loads((ROOT / "ops" / "rabbitmq" / "definitions.json").read_text())
    assert {v["name"] for v in definitions["vhosts"]} == {vhost}
    entities = [*definitions["queues"], *definitions["exchanges"], *definitions["bindings"]]
    assert entities and {e["vhost"] for e in entities} == {vhost}
