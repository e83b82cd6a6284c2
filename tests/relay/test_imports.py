"""The modules of ``relay`` import each other without a cycle (function-level imports
count too: a cycle hidden in a function is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import relay

PKG = Path(relay.__file__).parent


def _imports(path: Path) -> set[str]:
    """The ``relay`` modules ``path`` imports, anywhere in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("relay."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "relay":
                out.update(f"relay.{a.name}" for a in node.names if (PKG / f"{a.name}.py").exists())
            elif node.module.startswith("relay."):
                out.add(node.module)
    return out


def graph() -> dict[str, set[str]]:
    return {
        f"relay.{p.stem}": _imports(p) for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"
    }


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(g.get(mod, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[mod] = 2
        return None

    for mod in g:
        if mod not in state and (found := visit(mod)) is not None:
            return found
    return None


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relay_modules_import_each_other_without_a_cycle() -> None:
    g = graph()
    assert "relay.cluster" in g and "relay.edge" in g["relay.wiring"]  # the graph is read
    assert find_cycle(g) is None, " -> ".join(find_cycle(g) or [])
