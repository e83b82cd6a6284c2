"""The ownership check of the auth middleware on its own (issue 17 item 1): a route a
non-operator may call without an ``owner`` is refused; the owner is whatever the route's
resolver loads, whatever the URL's placeholders are called."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from control.accounts import Accounts, Role
from control.auth import AUTH, AuthState, auth_middleware
from control.context import MIGRATIONS
from core.db import create_engine, migrate
from core.http import error_middleware
from core.routes import Op, OpDoc, RouteTable, Scope, resolved_by
from tests.conftest import make_config

ANCHOR = ("operator", "anchor")


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _thing_owner(request: web.Request) -> Scope:
    # a resource named in the path by a placeholder the old rule never looked at
    things = {"t1": "1", "t2": "2"}
    raw = request.match_info["whatever"]
    return Scope.of([things[raw]]) if raw in things else Scope(missing=f"thing {raw}")


async def test_owner_check(tmp_path: Path) -> None:
    engine = create_engine(make_config(tmp_path).database_url)
    await migrate(engine, MIGRATIONS, "control")
    accounts = Accounts(engine, 3600)
    tokens, ids = {}, {}
    for name, role in (("a", Role.ANCHOR), ("b", Role.ANCHOR), ("boss", Role.OPERATOR)):
        user = await accounts.create_user(f"user-{name}", "correct-horse-battery-9", role)
        tokens[name] = (await accounts.issue_token(user.id, "api", "t"))[0]
        ids[name] = user.id
    anchors = {1: ids["a"], 2: ids["b"]}

    async def anchor_of(bid: int) -> int | None:
        return anchors.get(bid)

    async def room_broadcast(room: str) -> int | None:
        return None

    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[AUTH] = AuthState(accounts, anchor_of, room_broadcast)
    RouteTable(
        "t",
        [
            Op("GET", "/api/undeclared/{broadcast_id}", _ok, OpDoc("x", "t", ANCHOR)),
            Op(
                "GET",
                "/api/things/{whatever}",
                _ok,
                OpDoc("y", "t", ANCHOR),
                owner=resolved_by(_thing_owner, "the thing's broadcast"),
            ),
        ],
    ).install(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as s:

            async def get(path: str, who: str) -> tuple[int, str]:
                headers = {"Authorization": f"Bearer {tokens[who]}"}
                async with s.get(base + path, headers=headers) as r:
                    body = await r.json()
                    return r.status, body.get("error", {}).get("code", "")

            # no owner declared: refused to an anchor, even on their own broadcast
            assert await get("/api/undeclared/1", "a") == (403, "undeclared_owner")
            assert (await get("/api/undeclared/1", "boss"))[0] == 200
            # the owner is the loaded thing's broadcast
            assert (await get("/api/things/t1", "a"))[0] == 200
            assert await get("/api/things/t2", "a") == (404, "not_found")
            assert (await get("/api/things/t2", "b"))[0] == 200
            assert await get("/api/things/t9", "a") == (404, "not_found")
            assert (await get("/api/things/t2", "boss"))[0] == 200
    finally:
        await runner.cleanup()
        await engine.dispose()
