"""The extension, its composition root, the router and ``http_auth`` import no cycle.

Every import counts: at module level, inside functions and under
``TYPE_CHECKING``. The router depends on the services it is given, never on
the extension that wires them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flask_backstage_auth

PACKAGE = Path(flask_backstage_auth.__file__).parent
NAME = "flask_backstage_auth"
#: The modules whose cycles this test forbids (a prefix matches a whole folder).
GUARDED = (
    f"{NAME}.extension",
    f"{NAME}._wiring",
    f"{NAME}.router",
    f"{NAME}.http_auth",
    f"{NAME}.legacy.middleware",
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = (NAME, *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Every package module ``path`` imports, anywhere in it, with the packages on the way."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.add(node.module)
            targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    found = set()
    for target in targets:
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) - {name} for name, path in known.items()}


def test_no_cycle_runs_through_the_extension_the_router_or_http_auth() -> None:
    guarded = [
        sorted(component)
        for component in cycles(graph())
        if any(member.startswith(GUARDED) for member in component)
    ]
    assert guarded == []


def test_the_router_knows_nothing_of_the_extension() -> None:
    edges = graph()
    for name, targets in edges.items():
        if name.startswith((f"{NAME}.router", f"{NAME}.http_auth")):
            assert not targets & {f"{NAME}.extension", f"{NAME}._wiring"}, name


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
