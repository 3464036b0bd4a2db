"""The settings reference is generated from the model, so it cannot drift; the docs point at real settings."""

from __future__ import annotations

import re
from pathlib import Path

from emailer.config import PREFIX, Settings
from emailer.entrypoints.settings_doc import reference

ROOT = Path(__file__).resolve().parents[2]


def test_docs_settings_md_is_the_generated_reference() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == reference(), (
        "docs/settings.md is stale: run `emailer show-config --reference > docs/settings.md`"
    )


def test_every_setting_says_what_it_is_for() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_the_docs_name_only_settings_that_exist() -> None:
    known = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    not_settings = tuple(f"EMAILER_{kind}_" for kind in ("TEST", "SANDBOX", "FAULT", "FUZZ", "HYPOTHESIS"))
    files = [ROOT / "README.md", *(ROOT / "ops").rglob("*.md"), ROOT / "ops" / "emailer.env.example"]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in re.findall(r"EMAILER_[A-Z0-9_]*[A-Z0-9]", path.read_text())
        if name not in known and not name.startswith(not_settings)
    }
    assert sorted(unknown) == []
