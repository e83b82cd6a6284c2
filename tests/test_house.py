"""The house rules that span packages: the router agrees with the route tables and the
OpenAPI document, an undeclared ``/api/`` route is refused, and no import cycle exists
between the project's modules."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from control.api import CONTROL
from control.auth import AUTH, AuthState, auth_middleware
from core.http import error_middleware
from core.routes import Op, OpDoc, RouteTable, installed

# Routes outside /api/ that no table declares, and why; this list only shrinks.
OUTSIDE_TABLES = {
    "/socket.io/": "python-socketio attaches its own routes (danmaku)",
    "/console": "the console's static files (router.add_static, control)",
    "/healthz": "added by control.app.create_app itself",
}


def _api_routes(app: web.Application) -> list[tuple[str, str, web.AbstractRoute]]:
    out = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith("/api/"):
            continue
        out.append((route.method, resource.canonical, route))
    return out


async def test_router_tables_and_openapi_agree(server) -> None:
    """Every ``/api/`` route is declared with roles, documented with the same roles, and
    every documented operation is on the router; every declared route is on the router,
    declared by one package only; outside ``/api/`` every route is declared too, but for
    :data:`OUTSIDE_TABLES`."""
    app = server.app
    reg = installed(app)
    spec: dict[str, Any] = app[CONTROL].spec
    assert {"control", "replay", "relay", "danmaku", "shop_bridge"} <= {
        t.package for t in reg.tables
    }
    on_router: set[tuple[str, str]] = set()
    problems: list[str] = []
    for method, path, route in _api_routes(app):
        if method == "HEAD":
            method = "GET"  # router.add_get adds HEAD; it is the GET's
        on_router.add((method, path))
        roles = reg.roles.get(route)
        if not roles:
            problems.append(f"{method} {path}: no table declares it")
            continue
        op = spec["paths"].get(path, {}).get(method.lower())
        if op is None:
            problems.append(f"{method} {path}: not in /api/openapi.json")
        elif tuple(op["x-roles"]) != tuple(roles):
            problems.append(f"{method} {path}: enforced {roles}, documented {op['x-roles']}")
    for path, item in spec["paths"].items():
        for method, op in item.items():
            documented = isinstance(op, dict) and "responses" in op
            if documented and (method.upper(), path) not in on_router:
                problems.append(f"{method.upper()} {path}: documented, not on the router")
    owners: dict[tuple[str, str], str] = {}
    for table in reg.tables:
        for op in table:
            other = owners.setdefault((op.method, op.template), table.package)
            if other != table.package:
                problems.append(
                    f"{op.method} {op.template}: declared by {other} and {table.package} "
                    f"(aiohttp answers with the first installed; the other is never reached)"
                )
    routes = set(app.router.routes())
    declared = 0
    for table in reg.tables:
        for op in table:
            declared += 1
            if not any(
                r.method == op.method and r.resource is not None
                and r.resource.canonical == op.template
                for r in routes
            ):  # fmt: skip
                problems.append(f"{table.package}: {op.method} {op.template} not on the router")
    for route in reg.roles:
        if route not in routes:
            problems.append(f"recorded roles for a route not on the router: {route}")
    # outside /api/: every route is in a table too, but for the few listed here
    undeclared = {
        r.resource.canonical
        for r in routes
        if r.resource is not None
        and r not in reg.roles
        and not r.resource.canonical.startswith("/api/")
    }
    for path in sorted(undeclared - set(OUTSIDE_TABLES)):
        problems.append(f"{path}: on the router, in no route table")
    for path in sorted(set(OUTSIDE_TABLES) - undeclared):
        problems.append(f"{path}: in OUTSIDE_TABLES but declared now (or gone): drop it")
    assert not problems, "\n".join(problems)
    assert declared > 40  # the walk saw the tables


async def test_undeclared_api_route_is_refused() -> None:
    """A route under ``/api/`` that no table declares gets 403, never a default role."""

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[error_middleware])
    app[AUTH] = AuthState()
    app.middlewares.append(auth_middleware)
    table = RouteTable("t", [Op("GET", "/api/declared", hello, OpDoc("hi", "t", ("public",)))])
    table.install(app)
    app.router.add_get("/api/sneaked-in", hello)
    app.router.add_get("/not-api", hello)
    async with TestServer(app, host="127.0.0.1", port=0) as ts, aiohttp.ClientSession() as s:
        async with s.get(ts.make_url("/api/sneaked-in")) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "undeclared_route"
        # a declared public route passes the middleware (then needs the accounts: 503 here)
        async with s.get(ts.make_url("/api/declared")) as r:
            assert r.status == 503
        async with s.get(ts.make_url("/not-api")) as r:
            assert r.status == 200


# -- no import cycles ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent

# Cycles known and being removed; this list only shrinks: a cycle found that is not listed
# fails, and so does a listed cycle that is gone (delete its entry).
KNOWN_CYCLES: set[frozenset[str]] = set()


def project_packages() -> list[str]:
    """The packages ``pyproject.toml`` ships (``media*``, ``core*``... -> top-level names)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").split(".")[0] for pattern in include})


def module_files(packages: list[str]) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> modules it imports`` (within ``mods``), from every import statement.

    Every import counts: at module level, inside functions (a lazy import), and under
    ``if TYPE_CHECKING``. A cycle moved into a function still ties the two modules
    together (neither can be read, tested or replaced alone) and only hides from the
    interpreter; the point of this test is that the dependency graph is a DAG, not that
    the interpreter happens to survive it. ``from pkg import name`` is an edge to
    ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``). Importing
    ``pkg.sub.mod`` also runs ``pkg/__init__`` and ``pkg/sub/__init__``: an edge to each
    of those packages the importer is not itself inside (``replay.service`` importing
    ``control.events`` runs ``control/__init__``, which must therefore not assemble the
    app). A module's own ancestors are not counted: every submodule would otherwise form
    a cycle with a package whose ``__init__`` re-exports it.
    """
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join([*here, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target not in mods or target == mod:
                    continue
                graph[mod].add(target)
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in mods and not (mod + ".").startswith(parent + "."):
                        graph[mod].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def a_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """One concrete loop through a component, for the failure message."""
    inside = set(members)
    start = members[0]
    path = [start]
    seen = {start}
    while True:
        nxt = sorted(m for m in graph[path[-1]] if m in inside)
        back = [m for m in nxt if m in seen]
        if back:
            return [*path[path.index(back[0]) :], back[0]]
        path.append(nxt[0])
        seen.add(nxt[0])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_function_level_and_relative_imports(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .one import x\n")
    (pkg / "one.py").write_text("def f():\n    from pkg import two\n")
    (pkg / "two.py").write_text("from pkg.one import f\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "__init__.py").write_text("from other.app import run\n")
    (other / "app.py").write_text("import pkg\n")
    (other / "events.py").write_text("X = 1\n")
    (pkg / "three.py").write_text("from other.events import X\n")
    mods = {
        "pkg": pkg / "__init__.py",
        "pkg.one": pkg / "one.py",
        "pkg.two": pkg / "two.py",
        "pkg.three": pkg / "three.py",
        "other": other / "__init__.py",
        "other.app": other / "app.py",
        "other.events": other / "events.py",
    }
    graph = import_graph(mods)
    assert graph == {
        "pkg": {"pkg.one"},
        "pkg.one": {"pkg.two"},
        "pkg.two": {"pkg.one"},
        "pkg.three": {"other.events", "other"},  # other/__init__ runs too
        "other": {"other.app"},
        "other.app": {"pkg"},
        "other.events": set(),
    }
    assert cycles(graph) == [["pkg.one", "pkg.two"]]
    graph["pkg"].add("pkg.three")  # now pkg -> pkg.three -> other -> other.app -> pkg
    assert sorted(cycles(graph)) == [
        ["other", "other.app", "pkg", "pkg.three"],
        ["pkg.one", "pkg.two"],
    ]


def test_no_import_cycle_in_the_project() -> None:
    packages = project_packages()
    assert {"media", "core", "control", "relay", "shop_bridge"} <= set(packages)
    graph = import_graph(module_files(packages))
    found = {frozenset(c): c for c in cycles(graph)}
    new = [" -> ".join(a_cycle(graph, c)) for key, c in found.items() if key not in KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not new, "import cycles:\n" + "\n".join(new)
    assert not gone, f"listed in KNOWN_CYCLES but gone (delete the entry): {gone}"
