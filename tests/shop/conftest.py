"""Fixtures of the shop tests: a full server per backend, an HTTP helper, fake time.

Backends: ``embedded`` (SQLite under the data dir + the embedded valkey-server) and
``production`` (PostgreSQL from BERRYLIVE_TEST_DATABASE_URL in a database created for each
test and dropped after it, and the real Redis from BERRYLIVE_TEST_REDIS_URL when set, with a
unique key prefix; never FLUSHDB).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import redis.asyncio as aioredis

from core.tokens import issue_token
from shop_bridge import PAY_SIMULATOR, SHOP, ShopService
from shop_bridge.simulator import SimulatedProvider
from tests.conftest import TEST_SECRET, RunningServer

PG_ENV = "BERRYLIVE_TEST_DATABASE_URL"
REDIS_ENV = "BERRYLIVE_TEST_REDIS_URL"


@dataclass
class Backend:
    name: str
    database_url: str
    redis_url: str


async def _pg_admin(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["embedded", "production"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """``embedded``: SQLite + embedded valkey. ``production``: a PostgreSQL database made
    for this test (dropped after it) and the real Redis when BERRYLIVE_TEST_REDIS_URL is set."""
    if request.param == "embedded":
        yield Backend("embedded", "", "")
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL case: set {PG_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
        )
    name = f"berrylive_shop_{uuid.uuid4().hex[:12]}"
    await _pg_admin(base, f'CREATE DATABASE "{name}"')
    head, _sep, _db = base.rpartition("/")
    try:
        yield Backend("production", f"{head}/{name}", os.environ.get(REDIS_ENV, ""))
    finally:
        await _pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Api:
    """HTTP helper; sends the operator's token unless ``token=None`` (a public caller).

    A public call that names a ``user_id`` (in the body or as ``viewer=``) is made as that
    user's app: it carries the user's viewer token (``X-Viewer-Token``), as a real buyer
    does. ``viewer=""`` sends none (an anonymous caller)."""

    session: aiohttp.ClientSession
    base: str
    token: str = ""
    tokens: dict[str, str] | None = None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = "",
        viewer: str | None = None,
        **kw: Any,
    ) -> tuple[int, Any]:
        token = self.token if token == "" else token
        if token:
            kw.setdefault("headers", {})["Authorization"] = f"Bearer {token}"
        if token is None and viewer is None and isinstance(body, dict):
            named = body.get("user_id")
            viewer = named if isinstance(named, str) else None
        if viewer:
            kw.setdefault("headers", {})["X-Viewer-Token"] = issue_token(
                TEST_SECRET, viewer, viewer
            )
        if body is not None and not isinstance(body, bytes | str):
            kw["json"] = body
        elif body is not None:
            kw["data"] = body
        async with self.session.request(method, self.base + path, **kw) as r:
            data = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, data

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def ok(
        self,
        method: str,
        path: str,
        body: Any = None,
        status: int = 200,
        token: str | None = "",
        viewer: str | None = None,
    ) -> Any:
        got, data = await self.call(method, path, body, token=token, viewer=viewer)
        assert got == status, (method, path, got, data)
        return data


@dataclass
class ShopEnv:
    server: RunningServer
    api: Api
    backend: Backend

    @property
    def svc(self) -> ShopService:
        return self.server.app[SHOP]

    @property
    def sim(self) -> SimulatedProvider:
        return self.server.app[PAY_SIMULATOR]


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
async def shop_factory(
    backend: Backend, server_factory: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    sessions: list[aiohttp.ClientSession] = []
    prefix = f"test:{uuid.uuid4().hex[:8]}:shop"

    async def factory(name: str = "node", **shop: Any) -> ShopEnv:
        sections: dict[str, dict[str, Any]] = {
            "shop": {
                "redis_prefix": prefix,
                "sweep_interval": 3600.0,
                "reconcile_interval": 3600.0,
                # tests of other features pay orders without a recipient; the order core's
                # tests (test_recipients*) turn the rule on
                "require_recipient": False,
                # ... and are not rate-limited (tests/shop/test_abuse.py sets the limits)
                "buy_limit_user": 0,
                "buy_limit_device": 0,
                **shop,
            }
        }
        if backend.database_url:
            sections["database"] = {"url": backend.database_url}
        if backend.redis_url:
            sections["redis"] = {"url": backend.redis_url}
        srv = await server_factory(name, **sections)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        sessions.append(session)
        tokens = await staff_tokens(srv)
        return ShopEnv(srv, Api(session, srv.http_url, tokens["operator"], tokens), backend)

    yield factory
    for s in sessions:
        await s.close()
    if backend.redis_url:  # a shared Redis: remove this test's keys (never FLUSHDB)
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(backend.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match="{" + prefix + ":*", count=500)]
            for i in range(0, len(keys), 500):
                await client.unlink(*keys[i : i + 500])
        finally:
            await client.aclose()


@pytest.fixture
async def shop(shop_factory: Callable[..., Any]) -> ShopEnv:
    env: ShopEnv = await shop_factory()
    return env


async def staff_tokens(srv: RunningServer) -> dict[str, str]:
    """An operator and an anchor account (unique names: the PostgreSQL DB is shared)."""
    from control.accounts import Role
    from control.api import CONTROL

    accounts = srv.app[CONTROL].accounts
    assert accounts is not None
    out: dict[str, str] = {}
    for role in (Role.OPERATOR, Role.ANCHOR):
        user = await accounts.create_user(
            f"shop{role.value[:3]}{uuid.uuid4().hex[:8]}", "correct-horse-battery-9", role
        )
        token, _info = await accounts.issue_token(user.id, "api", "shop tests")
        out[role.value] = token
        out[f"{role.value}_id"] = str(user.id)
        out[f"{role.value}_name"] = user.username
    return out


def uid(prefix: str = "") -> Any:
    """A unique id: with a prefix, a string (keys, users); without, an integer (a broadcast
    id: control's ids are integers, and so is every broadcast id the shop takes and shows)."""
    n = uuid.uuid4().int % 10**12 + 1
    return f"{prefix}{n}" if prefix else n


async def make_product(
    api: Api, price: int = 9900, stock: int = 1000, skus: int = 1
) -> dict[str, Any]:
    body = {
        "title": "Merino scarf",
        "images": ["https://img.example/scarf.jpg"],
        "page_path": "pages/goods/detail?id=1",
        "skus": [
            {"specs": {"colour": c, "size": "M"}, "price_fen": price, "stock": stock}
            for c in ["red", "blue", "green"][:skus]
        ],
    }
    return await api.ok("POST", "/api/products", body, 201)


async def shelved_product(
    api: Api, title: str, price: int, stock: int = 10
) -> tuple[int, dict[str, Any]]:
    """A product (one SKU at ``price``), a broadcast ``title`` that lists it, and the
    product on that broadcast's shelf. Returns the broadcast's id and the product."""
    product = await make_product(api, price=price, stock=stock)
    b = await api.ok(
        "POST",
        "/api/broadcasts",
        {
            "title": title,
            "scheduled_start": "2030-01-01T12:00:00Z",
            "product_ids": [product["id"]],
        },
        201,
    )
    await api.ok(
        "PUT", f"/api/broadcasts/{b['id']}/shelf", {"items": [{"product_id": product["id"]}]}
    )
    return b["id"], product


async def place_order(
    api: Api, broadcast_id: int, sku_id: int, user: str, key: str
) -> dict[str, Any]:
    """One unit of ``sku_id`` ordered by ``user``'s app (unpaid)."""
    order: dict[str, Any] = await api.ok(
        "POST",
        "/api/orders",
        {
            "user_id": user,
            "sku_id": sku_id,
            "quantity": 1,
            "broadcast_id": broadcast_id,
            "idempotency_key": key,
        },
        201,
        token=None,
    )
    return order


async def pay_order(api: Api, order: dict[str, Any], user: str) -> dict[str, Any]:
    """Pay ``order`` as ``user`` through the payment simulator; returns it once ``paid``."""
    paying = await api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer=user)
    async with api.session.post(paying["payment"]["sim_pay_url"]) as r:
        assert r.status == 200
    return await wait_field(api, f"/api/orders/{order['id']}", "state", "paid")


async def wait_for(
    fetch: Callable[[], Awaitable[dict[str, Any]]], field: str, value: Any, timeout: float = 20
) -> dict[str, Any]:
    """Call ``fetch`` until the body it returns has ``field`` equal to ``value``; returns
    that body."""
    deadline = time.monotonic() + timeout
    while True:
        got = await fetch()
        if got[field] == value:
            return got
        assert time.monotonic() < deadline, (field, got[field], value, got)
        await asyncio.sleep(0.05)


async def wait_field(
    api: Api, path: str, field: str, value: Any, timeout: float = 20
) -> dict[str, Any]:
    """GET ``path`` (as the operator) until its ``field`` is ``value``; returns that body."""

    async def fetch() -> dict[str, Any]:
        got: dict[str, Any] = await api.ok("GET", path)
        return got

    return await wait_for(fetch, field, value, timeout)


async def sku_stock(api: Api, product_id: int) -> int:
    """The stock of the product's first SKU."""
    return int((await api.ok("GET", f"/api/products/{product_id}"))["skus"][0]["stock"])


@asynccontextmanager
async def provider_down(shop: ShopEnv) -> AsyncIterator[SimulatedProvider]:
    """The payment simulator stopped for the block, then started again on its port."""
    sim = shop.sim
    port = int(sim.url.rsplit(":", 1)[1])
    await sim.stop()
    try:
        yield sim
    finally:
        await sim.start("127.0.0.1", port)


async def make_sale(
    api: Api,
    broadcast_id: int,
    sku_id: int,
    stock: int = 100,
    limit: int = 1,
    price: int = 990,
    start_in: float = -60,
    length: float = 3600,
) -> dict[str, Any]:
    now = time.time()
    await on_shelf(api, broadcast_id, sku_id)
    body = {
        "broadcast_id": broadcast_id,
        "sku_id": sku_id,
        "sale_price_fen": price,
        "sale_stock": stock,
        "per_user_limit": limit,
        "starts_at": int((now + start_in) * 1000),
        "ends_at": int((now + start_in + length) * 1000),
    }
    return await api.ok("POST", "/api/flash-sales", body, 201)


async def known_broadcast(api: Api, broadcast_id: int) -> None:
    """Make ``broadcast_id`` one the shop sells for: an operator tells the shop of it
    (``PUT /api/broadcasts/{id}/shop``) unless it already knows it (from control, or an
    earlier call). The shop refuses sales for broadcasts it does not know."""
    status, info = await api.get(f"/api/broadcasts/{broadcast_id}/shop")
    if status == 200 and info.get("known"):
        return
    await api.ok(
        "PUT",
        f"/api/broadcasts/{broadcast_id}/shop",
        {"anchor_id": "anchor-t", "room": f"live/t{broadcast_id}"},
    )


async def on_shelf(api: Api, broadcast_id: int, sku_id: int) -> None:
    """Put the SKU's product on the broadcast's shelf (kept in front of what is there):
    the shop sells only what a broadcast's shelf shows."""
    await known_broadcast(api, broadcast_id)
    product_id = None
    after = 0
    while product_id is None:
        page = await api.ok("GET", f"/api/products?limit=200&after={after}")
        for p in page["items"]:
            if any(s["id"] == sku_id for s in p["skus"]):
                product_id = p["id"]
        assert product_id is not None or page["next_after"], f"no product has SKU {sku_id}"
        after = page["next_after"] or 0
    shelf = await api.ok("GET", f"/api/broadcasts/{broadcast_id}/shelf")
    items = [{"product_id": i["product"]["id"], "on_shelf": i["on_shelf"]} for i in shelf["items"]]
    if any(i["product_id"] == product_id and i["on_shelf"] for i in items):
        return
    items = [i for i in items if i["product_id"] != product_id]
    await api.ok(
        "PUT",
        f"/api/broadcasts/{broadcast_id}/shelf",
        {"items": [{"product_id": product_id}, *items]},
    )


async def buy_retrying(
    shop: Any, sale_id: int, user: str, key: str, qty: int = 1
) -> tuple[int, Any]:
    """One flash-sale buy as a client does it: ``503`` means "retry" (with the same key)."""
    body = {"user_id": user, "idempotency_key": key, "quantity": qty}
    async with asyncio.timeout(30):
        while True:
            path = f"/api/flash-sales/{sale_id}/buy"
            status, data = await shop.api.call("POST", path, body, token=None)
            if status != 503:
                return status, data
            assert data["error"]["code"] in ("rebuilding", "unavailable", "busy"), data
            await asyncio.sleep(0.02)


async def kill_embedded_valkey(shop: Any) -> int:
    """SIGKILL the server's embedded valkey-server (as the OOM killer does) and wait until
    berrylive's supervisor (core/redis.py), nobody else, has a new one answering on the same
    socket and dir. Returns the killed process's pid."""
    runtime = shop.server.runtime
    pidfile = Path(runtime.data_dir) / "valkey" / "valkey.pid"
    pid = int(pidfile.read_text().strip())
    psutil.Process(pid).kill()
    client = aioredis.Redis.from_url(runtime.redis_url)
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    if int(pidfile.read_text().strip() or 0) != pid and await client.ping():
                        break
                except (aioredis.ConnectionError, OSError, ValueError):
                    pass
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    return pid


async def journal_drained(svc: ShopService, sale_id: int, timeout: float = 10) -> None:
    """Wait until the sale's reservation journal is empty: the post-commit tidy-up runs
    after the buyers are answered (and takes the commits of a short while together)."""
    async with asyncio.timeout(timeout):
        while (await svc.flash.store.snapshot(sale_id)).journal:
            await asyncio.sleep(0.01)
