"""Ownership is a property of the resource (issue 17 item 1).

Two anchors, A and B, each with a broadcast, the same product on both shelves, a card and
a flash sale. Every route of every installed route table that an anchor, a moderator or
any signed-in user may call is walked (enumerated from the app's router, so a new route
is covered, or this test fails asking for an example) as anchor A with B's resources in
the path, the body and the query, and with A's own broadcast in the path but B's
resource in the body. Each call must be refused (403/404) and B's resources must be
exactly as they were. A few calls on A's own resources must succeed.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from control.accounts import Role
from control.api import CONTROL
from core.routes import installed
from shop_bridge.api import SHOP
from tests.conftest import RunningServer

STAFF_ROLES = {"anchor", "moderator", "any"}
PLACEHOLDER = re.compile(r"\{([_a-zA-Z][_a-zA-Z0-9]*)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")


@dataclass
class Side:
    """One anchor's world: token, user id, broadcast, room, sale, a token id of theirs."""

    token: str
    user_id: int
    broadcast: int
    room: str
    sale: int
    token_id: int


@dataclass
class World:
    server: RunningServer
    session: aiohttp.ClientSession
    operator: str
    moderator: str
    product: int
    sku: int
    a: Side
    b: Side

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.server.http_url + path, json=json, data=data, headers=h
        ) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()

    async def ok(self, method: str, path: str, json: Any = None, status: int = 200) -> Any:
        got, body = await self.call(method, path, self.operator, json=json)
        assert got == status, (method, path, got, body)
        return body


async def _wait(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def world(server_factory: Callable[..., Any]) -> Any:
    server = await server_factory()
    accounts = server.app[CONTROL].accounts
    assert accounts is not None
    tag = uuid.uuid4().hex[:6]

    async def account(role: Role, name: str) -> tuple[str, int, int]:
        user = await accounts.create_user(f"{name}{tag}", "correct-horse-battery-9", role)
        token, info = await accounts.issue_token(user.id, "api", f"{name} token")
        return token, user.id, info.id

    op_token, _, _ = await account(Role.OPERATOR, "boss")
    mod_token, _, _ = await account(Role.MODERATOR, "mod")
    async with aiohttp.ClientSession() as session:
        w = World(server, session, op_token, mod_token, 0, 0, None, None)  # type: ignore[arg-type]
        product = await w.ok(
            "POST",
            "/api/products",
            {"title": "Tea", "skus": [{"price_fen": 9900, "stock": 1000}]},
            201,
        )
        w.product, w.sku = product["id"], product["skus"][0]["id"]
        sides = []
        for name in ("anchora", "anchorb"):
            token, user_id, token_id = await account(Role.ANCHOR, name)
            b = await w.ok(
                "POST",
                "/api/broadcasts",
                {"title": name, "scheduled_start": "2030-01-01T12:00:00Z", "anchor_id": user_id},
                201,
            )
            bid = b["id"]

            async def told(bid: int = bid, user_id: int = user_id) -> bool:
                anchor, _room = await server.app[SHOP].shelf.broadcast_info(str(bid))
                return anchor == str(user_id)

            await _wait(told, f"the shop to learn broadcast {bid}'s anchor")
            await w.ok(
                "PUT", f"/api/broadcasts/{bid}/shelf", {"items": [{"product_id": w.product}]}
            )
            now = int(time.time() * 1000)
            sale = await w.ok(
                "POST",
                "/api/flash-sales",
                {
                    "broadcast_id": bid,
                    "sku_id": w.sku,
                    "sale_price_fen": 990,
                    "sale_stock": 10,
                    "per_user_limit": 1,
                    "starts_at": now - 60_000,
                    "ends_at": now + 3_600_000,
                },
                201,
            )
            await w.ok("POST", f"/api/broadcasts/{bid}/card", {"product_id": w.product}, 201)
            sides.append(
                Side(token, user_id, bid, f"{b['app']}/{b['stream']}", sale["id"], token_id)
            )
        w.a, w.b = sides
        yield w


def _fill(template: str, values: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m[1]
        assert name in values, f"{template}: no example value for {{{name}}}: add one"
        return str(values[name])

    return PLACEHOLDER.sub(one, template)


def path_values(template: str, side: Side, w: World) -> dict[str, Any]:
    """The ids of ``side``'s resources for each path placeholder."""
    own = {"broadcast_id": side.broadcast, "sale_id": side.sale, "product_id": w.product}
    if template.startswith("/api/broadcasts/"):
        own["id"] = side.broadcast
    elif template.startswith("/api/tokens/"):
        own["id"] = side.token_id
    return own


def body_of(method: str, template: str, ref: Side, w: World) -> Any:
    """A valid body for the route whose references point at ``ref``'s resources (or None
    for a route that takes none). A new route with a body needs an entry here."""
    now = int(time.time() * 1000)
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/flash-sales"): {
            "broadcast_id": ref.broadcast,
            "sku_id": w.sku,
            "sale_price_fen": 0,
            "sale_stock": 5,
            "per_user_limit": 1,
            "starts_at": now - 1000,
            "ends_at": now + 3_600_000,
        },
        ("PATCH", "/api/flash-sales/{sale_id}"): {"per_user_limit": 1000, "sale_stock": 9},
        ("POST", "/api/flash-sales/{sale_id}/close"): {"reason": "mine now"},
        ("PUT", "/api/broadcasts/{broadcast_id}/shelf"): {"items": []},
        ("PATCH", "/api/broadcasts/{broadcast_id}/shelf/{product_id}"): {"on_shelf": False},
        ("POST", "/api/broadcasts/{broadcast_id}/card"): {
            "product_id": w.product,
            "flash_sale_id": ref.sale,
        },
        ("POST", "/api/danmaku/moderation"): {
            "room": ref.room,
            "action": "mute",
            "user_id": "u-victim",
            "duration_s": 600,
        },
        ("POST", "/api/danmaku/notices"): {"room": ref.room, "text": "not yours"},
        ("POST", "/api/broadcasts/{id}/end"): {"reason": "ended by someone else"},
    }
    return bodies.get((method, template))


def query_of(template: str, ref: Side) -> str:
    if template in ("/api/danmaku/audit", "/api/danmaku/lotteries"):
        return f"?room={ref.room}"
    if template == "/api/flash-sales":
        return f"?broadcast_id={ref.broadcast}"
    return ""


def _steady(value: Any) -> Any:
    """``value`` without the figures that grow by themselves (time on the current card)."""
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if k != "explained_seconds"}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


async def snapshot(w: World, side: Side) -> dict[str, Any]:
    """Everything of ``side`` a foreign call could change, read as an operator."""
    bid, out = side.broadcast, {}
    for path in (
        f"/api/broadcasts/{bid}",
        f"/api/broadcasts/{bid}/push",
        f"/api/broadcasts/{bid}/history",
        f"/api/broadcasts/{bid}/shelf",
        f"/api/broadcasts/{bid}/card",
        f"/api/broadcasts/{bid}/cards",
        f"/api/broadcasts/{bid}/sales",
        f"/api/flash-sales/{side.sale}",
        f"/api/products/{w.product}",
        f"/api/danmaku/audit?room={side.room}",
    ):
        status, body = await w.call("GET", path, w.operator)
        out[path] = (status, _steady(body))
    status, _me = await w.call("GET", "/api/me", side.token)
    out["token works"] = status
    return out


def staff_routes(w: World) -> list[tuple[str, str, Any]]:
    """(method, template, op) of every installed route a non-operator may call."""
    seen: dict[tuple[str, str], Any] = {}
    for table in installed(w.server.app).tables:
        for op in table:
            if "public" in op.roles:
                continue
            if STAFF_ROLES & set(op.roles):
                seen[(op.method, op.template)] = op
    return [(m, t, op) for (m, t), op in sorted(seen.items())]


# Routes acting on the caller's own records only (no resource id of someone else's can be
# named): what each must show. A new such route needs an entry.
async def _own_list_broadcasts(w: World) -> None:
    status, page = await w.call("GET", "/api/broadcasts", w.a.token)
    assert status == 200 and [b["id"] for b in page["items"]] == [w.a.broadcast]


async def _own_me(w: World) -> None:
    status, me = await w.call("GET", "/api/me", w.a.token)
    assert status == 200 and me["id"] == w.a.user_id


async def _own_tokens(w: World) -> None:
    status, page = await w.call("GET", "/api/tokens", w.a.token)
    assert status == 200 and w.b.token_id not in [t["id"] for t in page["items"]]


async def _own_new_token(w: World) -> None:
    status, created = await w.call("POST", "/api/tokens", w.a.token, json={"name": "mine"})
    assert status == 201, created
    status, page = await w.call("GET", "/api/tokens", w.b.token)
    assert created["id"] not in [t["id"] for t in page["items"]]


async def _own_logout(w: World) -> None:
    accounts = w.server.app[CONTROL].accounts
    assert accounts is not None
    spare, _ = await accounts.issue_token(w.a.user_id, "api", "spare")
    status, _ = await w.call("POST", "/api/auth/logout", spare)
    assert status == 204
    status, _ = await w.call("GET", "/api/me", w.b.token)
    assert status == 200  # B's token untouched


OWN_ONLY = {
    ("GET", "/api/broadcasts"): _own_list_broadcasts,
    ("GET", "/api/me"): _own_me,
    ("GET", "/api/tokens"): _own_tokens,
    ("POST", "/api/tokens"): _own_new_token,
    ("POST", "/api/auth/logout"): _own_logout,
}


def test_every_staff_route_declares_an_owner(server: RunningServer) -> None:
    missing = []
    for table in installed(server.app).tables:
        for op in table:
            if "public" in op.roles or not STAFF_ROLES & set(op.roles):
                continue
            if getattr(op, "owner", None) is None:
                missing.append(f"{op.method} {op.template}")
    assert not missing, f"routes a non-operator may call without an owner: {missing}"


async def test_anchor_cannot_touch_another_anchors_resources(world: World) -> None:
    w = world
    before = await snapshot(w, w.b)
    refused: list[str] = []
    accepted: list[str] = []
    routes = staff_routes(w)
    assert len(routes) >= 25, [f"{m} {t}" for m, t, _ in routes]
    for method, template, _op in routes:
        if (method, template) in OWN_ONLY:
            await OWN_ONLY[(method, template)](w)
            continue
        assert (
            PLACEHOLDER.search(template)
            or body_of(method, template, w.b, w) is not None
            or (query_of(template, w.b))
        ), f"{method} {template}: names no resource; add it to OWN_ONLY or give an example"
        tries = [(path_values(template, w.b, w), w.b)]  # B's in the path, the body, the query
        if body_of(method, template, w.b, w) != body_of(method, template, w.a, w) and (
            PLACEHOLDER.search(template)
        ):
            tries.append((path_values(template, w.a, w), w.b))  # A's path, B's body
        for values, ref in tries:
            path = _fill(template, values) + query_of(template, ref)
            body = body_of(method, template, ref, w)
            extra: dict[str, Any] = {}
            if template.endswith("/cover") and method == "PUT":
                extra = {
                    "data": b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
                    "headers": {"Content-Type": "image/png"},
                }
                body = None
            status, answer = await w.call(method, path, w.a.token, json=body, **extra)
            where = f"{method} {path} body={body}"
            if status in (403, 404):
                refused.append(where)
            else:
                accepted.append(f"{where} -> {status} {str(answer)[:200]}")
    assert not accepted, "anchor A acted on B's resources:\n" + "\n".join(accepted)
    after = await snapshot(w, w.b)
    for key in before:
        assert after[key] == before[key], f"B's {key} changed"
    assert len(refused) >= 25


async def test_anchor_acts_on_their_own(world: World) -> None:
    w = world
    a = w.a
    status, got = await w.call("GET", f"/api/broadcasts/{a.broadcast}", a.token)
    assert status == 200 and got["id"] == a.broadcast
    status, sale = await w.call(
        "PATCH", f"/api/flash-sales/{a.sale}", a.token, json={"per_user_limit": 2}
    )
    assert status == 200 and sale["per_user_limit"] == 2, sale
    status, card = await w.call(
        "POST",
        f"/api/broadcasts/{a.broadcast}/card",
        a.token,
        json={"product_id": w.product, "flash_sale_id": a.sale},
    )
    assert status == 201, card
    now = int(time.time() * 1000)
    status, new = await w.call(
        "POST",
        "/api/flash-sales",
        a.token,
        json={
            "broadcast_id": a.broadcast,
            "sku_id": w.sku,
            "sale_price_fen": 500,
            "sale_stock": 3,
            "starts_at": now - 1000,
            "ends_at": now + 600_000,
        },
    )
    assert status == 201 and new["broadcast_id"] == a.broadcast, new
    status, closed = await w.call("POST", f"/api/flash-sales/{a.sale}/close", a.token)
    assert status == 200, closed
    # a moderator (no per-broadcast assignment) moderates any room; an anchor none
    status, _ = await w.call(
        "POST",
        "/api/danmaku/notices",
        w.moderator,
        json={"room": w.b.room, "text": "welcome"},
    )
    assert status == 200
    # an id that does not exist: 404 before anything else
    status, body = await w.call(
        "PATCH", "/api/flash-sales/999999", a.token, json={"per_user_limit": 3}
    )
    assert status == 404, body
