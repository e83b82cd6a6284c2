"""The shape of the package (issue 16): small modules, no reaching into private names.

Import cycles are checked for the whole project by ``tests/test_house.py``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shop_bridge"
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str, name: str) -> list[str]:
    """Private names of another module or object used in ``source`` (``self._x`` and
    ``cls._x`` are the object's own)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shop_bridge"):
            found += [f"{name}: import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{name}:{node.lineno}: .{node.attr}")
    return found


def test_no_module_uses_private_names_of_other_objects_or_modules() -> None:
    found = [f for p in _modules() for f in private_uses(p.read_text(), p.name)]
    assert not found, found


def test_private_uses_finds_a_planted_one() -> None:
    source = "a = self._mine\nb = svc._sale_row\nfrom shop_bridge.service import _iso\n"
    assert sorted(private_uses(source, "m.py")) == ["m.py: import _iso", "m.py:2: ._sale_row"]


def test_no_module_is_over_the_size_limit() -> None:
    over = {p.name: n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not over, over
