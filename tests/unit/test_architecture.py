"""The layers as the tree shows them, checked: dependencies point inward and no two modules import each other.

entry points -> bootstrap -> adapters -> endpoint / handlers -> domain -> contracts.
Every import counts, including those inside functions and under TYPE_CHECKING:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "handlers", "emailer")

# module prefix -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "contracts": ("emailer", "handlers"),
    "emailer.domain": ("emailer.adapters", "emailer.entrypoints", "emailer.endpoint", "emailer.bootstrap",
                       "emailer.config", "handlers"),
    "handlers": ("emailer.adapters", "emailer.entrypoints", "emailer.endpoint", "emailer.bootstrap",
                 "emailer.config"),
    "emailer.endpoint": ("emailer.adapters", "emailer.entrypoints", "emailer.bootstrap"),
    "emailer.adapters": ("emailer.entrypoints", "emailer.bootstrap"),
    "emailer.sandbox": ("emailer.adapters", "emailer.entrypoints", "emailer.endpoint", "emailer.domain",
                        "emailer.bootstrap", "handlers", "contracts"),
    "emailer.bootstrap": ("emailer.entrypoints",),
    # The webhook ingress holds no database connection (DESIGN.md): it reaches the bus only.
    "emailer.entrypoints.ingress": ("emailer.adapters.persistence", "emailer.entrypoints.worker",
                                    "emailer.entrypoints.gateway.app", "emailer.endpoint"),
    "emailer.adapters.webhooks": ("emailer.adapters.persistence", "emailer.adapters.bus", "handlers"),
    "emailer.config": ("emailer.adapters", "emailer.entrypoints", "emailer.endpoint", "emailer.bootstrap"),
}  # fmt: skip
# The domain is plain Python: no framework.
FRAMEWORKS = ("sqlalchemy", "kombu", "amqp", "fastapi", "starlette", "httpx", "sendgrid", "minio", "alembic")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The project module an import names (the longest known prefix), or None for third-party."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {resolve(t, known) for t in imports_of(name, path)}
        edges[name] = {t for t in targets if t and t != name}
    return edges


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_dependencies_point_inward() -> None:
    violations = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for layer, forbidden in FORBIDDEN.items()
        if _under(module, layer)
        for target in targets
        if any(_under(target, f) for f in forbidden) and not _under(target, layer)
    ]
    assert violations == []


def test_the_domain_imports_no_framework() -> None:
    known = modules()
    violations = [
        f"{name} imports {target}"
        for name, path in known.items()
        if _under(name, "emailer.domain")
        for target in imports_of(name, path)
        if target.split(".")[0] in FRAMEWORKS or target.startswith("pydantic")
    ]
    assert violations == []


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other (cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles() -> None:
    """A package's __init__ re-exporting its modules is fine; a module importing its own package is not."""
    edges = graph()
    # A package's __init__ importing its own submodules (re-exports) is not a cycle by itself;
    # a submodule importing its package back is what makes one.
    assert strongly_connected(edges) == []


@pytest.mark.parametrize("rule", sorted(FORBIDDEN))
def test_every_rule_names_a_real_layer(rule: str) -> None:
    assert any(_under(m, rule) for m in modules()), f"{rule} matches no module: the rule checks nothing"


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
