"""Flash sales: exact stock under 5000 concurrent attempts, per-user limits, idempotency."""

from __future__ import annotations

import asyncio
import collections
import random

from redis.crc import key_slot
from sqlalchemy import select

from shop_bridge.models import ORDERS
from shop_bridge.redis_store import SaleKeys
from tests.shop.conftest import journal_drained, make_product, make_sale, uid


async def _orders_of_sale(env, sale_id: int) -> list[dict]:
    async with env.svc.ctx.engine.connect() as conn:
        rows = await conn.execute(select(ORDERS).where(ORDERS.c.flash_sale_id == sale_id))
        return [dict(r) for r in rows.mappings()]


async def _attempt(api, sale_id: int, user: str, key: str, qty: int = 1) -> tuple[int, dict]:
    return await api.post(
        f"/api/flash-sales/{sale_id}/buy",
        {"user_id": user, "idempotency_key": key, "quantity": qty},
        token=None,
    )


async def test_5000_distinct_buyers_stock_100(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=100, limit=1)
    attempts = [(f"u{i}", f"k{i}") for i in range(5000)]
    results = await asyncio.gather(*(_attempt(api, sale["id"], u, k) for u, k in attempts))
    codes = collections.Counter(status for status, _ in results)
    assert codes[201] == 100, codes
    assert codes[409] == 4900, codes
    reasons = collections.Counter(b["error"]["code"] for s, b in results if s == 409)
    assert reasons == {"sold_out": 4900}
    orders = await _orders_of_sale(shop, sale["id"])
    assert len(orders) == 100
    assert len({o["user_id"] for o in orders}) == 100
    assert {o["id"] for o in orders} == {b["id"] for s, b in results if s == 201}
    audit = await api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"], audit
    assert audit["redis_stock"] == 0 and audit["db_held"] == 100 and audit["in_flight"] == 0
    got = await api.ok("GET", f"/api/flash-sales/{sale['id']}", token=None)
    assert got["remaining"] == 0 and got["status"] == "sold_out"


async def test_5000_attempts_repeated_users_limit_2(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=100, limit=2)
    rnd = random.Random(7)
    attempts = []
    for i in range(5000):
        user = f"r{rnd.randrange(300)}"  # ~17 attempts per user
        # a third of the attempts replay an earlier key of the same user (double taps, retries)
        key = f"{user}-{rnd.randrange(4)}" if rnd.random() < 0.33 else f"{user}-n{i}"
        attempts.append((user, key, rnd.choice([1, 1, 1, 2])))
    results = await asyncio.gather(*(_attempt(api, sale["id"], *a) for a in attempts))
    assert all(s in (200, 201, 409) for s, _ in results), collections.Counter(s for s, _ in results)
    orders = await _orders_of_sale(shop, sale["id"])
    assert sum(o["quantity"] for o in orders) == 100
    per_user = collections.Counter()
    for o in orders:
        per_user[o["user_id"]] += o["quantity"]
    assert max(per_user.values()) <= 2
    # the same (user, key) always maps to one order
    by_key: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for (user, key, _q), (status, body) in zip(attempts, results, strict=True):
        if status in (200, 201):
            by_key[(user, key)].add(body["id"])
    assert all(len(ids) == 1 for ids in by_key.values())
    assert {i for ids in by_key.values() for i in ids} == {o["id"] for o in orders}
    created = sum(1 for s, _ in results if s == 201)
    assert created == len(orders)
    audit = await api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"] and audit["users_over_limit"] == [], audit
    snap = await shop.svc.flash.store.snapshot(sale["id"])
    assert snap.users == dict(per_user) and snap.stock == 0


async def test_window_limit_and_idempotent_replay(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sku = product["skus"][0]["id"]
    later = await make_sale(api, uid(), sku, start_in=600)
    status, body = await _attempt(api, later["id"], "u1", "k1")
    assert (status, body["error"]["code"]) == (409, "sale_not_started")
    over = await make_sale(api, uid(), sku, start_in=-7200, length=3600)
    status, body = await _attempt(api, over["id"], "u1", "k1")
    assert (status, body["error"]["code"]) == (409, "sale_ended")
    sale = await make_sale(api, uid(), sku, stock=10, limit=3)
    s1, first = await _attempt(api, sale["id"], "u1", "a", 2)
    s2, same = await _attempt(api, sale["id"], "u1", "a", 2)
    assert (s1, s2) == (201, 200) and first["id"] == same["id"]
    s3, body = await _attempt(api, sale["id"], "u1", "b", 2)
    assert s3 == 409 and body["error"]["code"] == "limit_reached"
    s4, _ = await _attempt(api, sale["id"], "u1", "c", 1)
    assert s4 == 201
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}", token=None))["remaining"] == 7
    status, body = await api.post(
        "/api/flash-sales/999999/buy", {"user_id": "u", "idempotency_key": "x"}, token=None
    )
    assert status == 404


async def test_redis_loss_is_rebuilt_from_the_database(shop) -> None:
    """Redis is hot state; when its keys vanish the database rebuilds them exactly."""
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    for i in range(3):
        assert (await _attempt(api, sale["id"], f"u{i}", "k"))[0] == 201
    await shop.svc.flash.store.drop(sale["id"])
    # same user again: still refused (its count comes back from the orders)
    status, body = await _attempt(api, sale["id"], "u0", "other")
    assert status == 409 and body["error"]["code"] == "limit_reached"
    status, again = await _attempt(api, sale["id"], "u1", "k")  # replay still deduplicated
    assert again["user_id"] == "u1"
    assert status == 200
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 2
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}/audit"))["consistent"]


def test_keys_of_one_sale_share_a_cluster_slot() -> None:
    keys = SaleKeys.for_sale("berrylive:shop", 42)
    assert len({key_slot(k.encode()) for k in keys.all()}) == 1
    other = SaleKeys.for_sale("berrylive:shop", 43)
    assert keys.stock != other.stock


async def test_orders_written_in_batches_are_all_durable(shop) -> None:
    """Group commit: every 201 corresponds to a committed row, even under a burst."""
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=300, limit=1)
    results = await asyncio.gather(*(_attempt(api, sale["id"], f"b{i}", "k") for i in range(300)))
    assert all(s == 201 for s, _ in results)
    async with shop.svc.ctx.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ORDERS.c.id, ORDERS.c.user_id).where(ORDERS.c.flash_sale_id == sale["id"])
            )
        ).all()
    # every buyer told "ordered" has exactly that order committed, and nothing else is
    assert {(r[0], r[1]) for r in rows} == {(b["id"], b["user_id"]) for _, b in results}
    assert len(rows) == 300
    # the journal entries go after the buyers were answered (a hint once rows are durable)
    await journal_drained(shop.svc, sale["id"])
