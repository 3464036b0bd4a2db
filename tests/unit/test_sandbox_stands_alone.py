"""The sandbox is a separate application: it imports nothing from the rest of Emailer."""

from __future__ import annotations

import ast
from pathlib import Path

import emailer.sandbox

SANDBOX = Path(emailer.sandbox.__file__).parent
OURS = ("emailer", "contracts", "handlers")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import stays inside the sandbox package
                continue
            modules.add(node.module or "")
    return modules


def is_outside_the_sandbox(module: str) -> bool:
    inside = module == "emailer.sandbox" or module.startswith("emailer.sandbox.")
    return module.split(".")[0] in OURS and not inside


def test_the_check_tells_inside_from_outside() -> None:
    assert not is_outside_the_sandbox("emailer.sandbox.rules")
    assert not is_outside_the_sandbox("httpx")
    assert is_outside_the_sandbox("emailer.config")
    assert is_outside_the_sandbox("handlers.ports")


def test_the_sandbox_imports_only_itself_from_emailer() -> None:
    modules = sorted(SANDBOX.glob("*.py"))
    assert len(modules) > 3  # the glob did find the sandbox
    outside = {
        f"{path.name}: {name}"
        for path in modules
        for name in imported_modules(path)
        if is_outside_the_sandbox(name)
    }
    assert outside == set()
