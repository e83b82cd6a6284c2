"""Redis loses recent writes mid-sale (a restart whose append-only file missed the last
second, a failover, a restore from an older snapshot): the shop rebuilds the sale from
the orders before it takes another buy. No oversell, no reset per-user limit, no leaked
unit, and a retried idempotency key answers with its order.

The older state is made real: the sale's keys (and the shop's epoch key) are DUMPed early
in the sale and RESTOREd after more buys. On the embedded backend the valkey-server is
also killed (SIGKILL) and berrylive's supervisor starts a new one on the same socket and
dir (a new run id); on the production backend (a shared Redis that must not be restarted)
the buy path's connections are dropped, as a failover drops them, and the epoch that went
back is what shows it. The periodic check is off in these tests (an hour): the new
connection's check alone must find it. A last test shows the periodic check finding a
rollback that no reconnect shows."""

from __future__ import annotations

import asyncio
import signal

import redis.asyncio as aioredis
from sqlalchemy import func, select

from shop_bridge.models import ORDERS
from tests.shop.conftest import (
    buy_retrying,
    journal_drained,
    kill_embedded_valkey,
    make_product,
    make_sale,
    uid,
)


async def _dump(client: aioredis.Redis, keys: list[str]) -> dict[str, tuple[bytes | None, int]]:
    out: dict[str, tuple[bytes | None, int]] = {}
    for k in keys:
        out[k] = (await client.dump(k), await client.pttl(k))
    return out


async def _restore(client: aioredis.Redis, snap: dict[str, tuple[bytes | None, int]]) -> None:
    for k, (raw, ttl) in snap.items():
        if raw is None:
            await client.delete(k)
        else:
            await client.restore(k, max(ttl, 0), raw, replace=True)


async def _restart_embedded_valkey(shop) -> asyncio.subprocess.Process | None:
    """SIGKILL the server's valkey-server; berrylive's supervisor (core/redis.py) starts a
    new one on the same socket and dir (the append-only file is read back: a new run id,
    the same data up to its last fsync). Returns the process the test must stop: none."""
    await kill_embedded_valkey(shop)
    return None


async def _sold(shop, sale_id: int) -> int:
    async with shop.svc.ctx.engine.connect() as conn:
        got = await conn.execute(
            select(func.coalesce(func.sum(ORDERS.c.quantity), 0)).where(
                ORDERS.c.flash_sale_id == sale_id
            )
        )
        return int(got.scalar_one())


async def test_an_older_redis_state_mid_sale_is_rebuilt_from_the_orders(shop_factory) -> None:
    shop = await shop_factory(redis_check_interval=3600.0)
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=10, limit=2)
    sid = sale["id"]
    # before the snapshot: u0 at the limit, u1 one unit (key k1)
    assert (await buy_retrying(shop, sid, "u0", "a", 2))[0] == 201
    status, first_k1 = await buy_retrying(shop, sid, "u1", "k1")
    assert status == 201
    await journal_drained(svc, sid)
    keys = [*svc.flash.store.keys(sid).all(), svc.flash.store.epoch_key]
    client = aioredis.Redis.from_url(shop.server.runtime.redis_url)
    proc: asyncio.subprocess.Process | None = None
    try:
        snap = await _dump(client, keys)
        if shop.backend.name == "production":
            # a reconnect made the shop verify (and bump the epoch) after the snapshot
            await svc.epoch.rebuild("test: a reconnect after the snapshot")
        # after the snapshot: u2 at the limit, u3 (k3), u1 at the limit (k1b): 7 sold
        assert (await buy_retrying(shop, sid, "u2", "b", 2))[0] == 201
        status, first_k3 = await buy_retrying(shop, sid, "u3", "k3")
        assert status == 201
        assert (await buy_retrying(shop, sid, "u1", "k1b"))[0] == 201
        await journal_drained(svc, sid)
        assert await _sold(shop, sid) == 7
        rebuilds = svc.epoch.rebuilds

        # Redis goes back to the snapshot: 3 sold, u1 and u2 "under" their limits
        if shop.backend.name == "embedded":
            await client.aclose()
            proc = await _restart_embedded_valkey(shop)
            client = aioredis.Redis.from_url(shop.server.runtime.redis_url)
            await _restore(client, snap)
        else:
            await _restore(client, snap)
            # a failover drops the connections: the buy path reconnects
            await svc.flash.store.buy_client.connection_pool.disconnect()
        assert int(await client.get(svc.flash.store.keys(sid).stock)) == 7  # rolled back

        # buyers at their limit stay refused (their counts came back from the orders)
        for user in ("u0", "u1", "u2"):
            status, body = await buy_retrying(shop, sid, user, f"again-{user}")
            assert (status, body["error"]["code"]) == (409, "limit_reached"), (user, body)
        assert svc.epoch.rebuilds > rebuilds
        # retried keys answer with their orders (one from before the snapshot, one after)
        status, again = await buy_retrying(shop, sid, "u1", "k1")
        assert (status, again["id"]) == (200, first_k1["id"])
        status, again = await buy_retrying(shop, sid, "u3", "k3")
        assert (status, again["id"]) == (200, first_k3["id"])
        # the 3 units left sell, and not one more
        results = await asyncio.gather(*(buy_retrying(shop, sid, f"n{i}", "k") for i in range(8)))
        assert sorted(s for s, _ in results) == [201] * 3 + [409] * 5
        assert {b["error"]["code"] for s, b in results if s == 409} == {"sold_out"}
        await journal_drained(svc, sid)
        sold = await _sold(shop, sid)
        left = int(await client.get(svc.flash.store.keys(sid).stock))
        assert sold == 10 and left == 0  # no oversell, no leaked unit
        audit = await shop.api.ok("GET", f"/api/flash-sales/{sid}/audit")
        assert audit["consistent"] and audit["users_over_limit"] == [], audit
    finally:
        await client.aclose()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def test_the_periodic_check_finds_a_rollback_no_reconnect_shows(shop_factory) -> None:
    """A restore into a running Redis (same run id, connections kept) that took our
    epoch back: the periodic check finds it and rebuilds from the orders."""
    shop = await shop_factory(redis_check_interval=0.05)
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    sid = sale["id"]
    assert (await buy_retrying(shop, sid, "p0", "a"))[0] == 201
    keys = [*svc.flash.store.keys(sid).all(), svc.flash.store.epoch_key]
    client = aioredis.Redis.from_url(shop.server.runtime.redis_url)
    try:
        await journal_drained(svc, sid)
        snap = await _dump(client, keys)
        await svc.epoch.rebuild("test: a reconnect after the snapshot")
        for i in range(1, 4):
            assert (await buy_retrying(shop, sid, f"p{i}", "a"))[0] == 201
        await journal_drained(svc, sid)
        rebuilds = svc.epoch.rebuilds
        await _restore(client, snap)
        async with asyncio.timeout(10):
            while svc.epoch.rebuilds == rebuilds:
                await asyncio.sleep(0.01)
        assert int(await client.get(svc.flash.store.keys(sid).stock)) == 1
        status, body = await buy_retrying(shop, sid, "p3", "other")
        assert (status, body["error"]["code"]) == (409, "limit_reached")
        assert (await buy_retrying(shop, sid, "p9", "a"))[0] == 201
        status, body = await buy_retrying(shop, sid, "p10", "a")
        assert (status, body["error"]["code"]) == (409, "sold_out")
        assert await _sold(shop, sid) == 5
    finally:
        await client.aclose()


async def test_a_release_cut_in_two_by_a_rebuild_leaks_no_unit(shop_factory) -> None:
    """A cancelled order's release is two steps: the script puts its units back in Redis,
    then its row is marked. A rebuild between the two must not lose the units (the
    rebuild counts a cancelled order as back on sale, and its release then finds it
    done), nor give them back twice if the script had not run yet."""
    from sqlalchemy import update

    shop = await shop_factory(redis_check_interval=3600.0)
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=3, limit=1)
    sid = sale["id"]
    orders = [(await buy_retrying(shop, sid, f"c{i}", "k"))[1] for i in range(2)]
    await journal_drained(svc, sid)
    now = svc.ctx.now_ms()
    async with svc.ctx.engine.begin() as conn:  # both cancelled; their releases not done
        await conn.execute(
            update(ORDERS)
            .where(ORDERS.c.id.in_([o["id"] for o in orders]))
            .values(state="cancelled", cancelled_ms=now)
        )
    first, second = orders
    # the first release's script ran before the rebuild, its row is marked after it
    released = await svc.flash.store.release_status(
        sid, order_id=first["id"], user=first["user_id"], qty=1, now_ms=now
    )
    assert released == 1
    await svc.epoch.rebuild("test: a reconnect between the two steps")
    async with svc.ctx.engine.begin() as conn:
        await conn.execute(
            update(ORDERS)
            .where(ORDERS.c.id == first["id"])
            .values(stock_released=True, restock="sale")
        )
    # the second release runs wholly after the rebuild
    await svc.ctx.book.release_stock(await svc.ctx.book.get(second["id"]))
    assert (await svc.ctx.book.get(second["id"]))["stock_released"]
    assert await svc.flash.store.stock(sid) == 3  # every unit back on sale, once
    audit = await shop.api.ok("GET", f"/api/flash-sales/{sid}/audit")
    assert audit["consistent"], audit
    results = await asyncio.gather(*(buy_retrying(shop, sid, f"d{i}", "k") for i in range(5)))
    assert sorted(s for s, _ in results) == [201] * 3 + [409] * 2
