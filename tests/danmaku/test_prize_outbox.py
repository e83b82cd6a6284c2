"""Lottery prizes are delivered from a durable record until the shop has granted them,
exactly once (issue 17 item 14): with the bus event lost, with the outbox write failing
at draw time (a crash between the draw and the delivery), and with the shop down while
the draw happens. Finished lotteries' keys and a room's keys expire."""

from __future__ import annotations

import asyncio

import aiohttp
from sqlalchemy import func, select

from core.tokens import Role, Viewer
from danmaku.rooms import Member
from danmaku.service import DANMAKU
from shop_bridge import SHOP
from shop_bridge.models import GRANTS
from tests.danmaku.helpers import join, staff_api

ROOM = "live/prizes"


def member(i: int) -> Member:
    viewer = Viewer(user_id=f"winner{i}", nick=f"w{i}", role=Role.VIEWER, expires=2e9)
    return Member(sid=f"sid{i}", conn=None, viewer=viewer, role=Role.VIEWER, room=ROOM)


async def grants(server, lid: str) -> list[str]:
    engine = server.app[SHOP].ctx.engine
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(GRANTS.c.grant_key).where(GRANTS.c.grant_key.like(f"{lid}:%"))
        )
        return sorted(r[0] for r in rows)


async def grant_count(server) -> int:
    async with server.app[SHOP].ctx.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(GRANTS))).scalar_one())


async def timed_lottery(api, winners: int) -> str:
    status, lot = await api.call(
        "POST",
        "/api/danmaku/lotteries",
        json={
            "room": ROOM,
            "title": "Coupons",
            "prizes": [{"name": "5 yuan off", "stock": winners, "coupon": 500}],
            "entry": "button",
            "window_s": 120,
            "mode": "timed",
        },
    )
    assert status == 201, lot
    return lot["lottery_id"]


def shop_off_the_bus(server) -> None:
    """The shop's bus subscriptions go (as if every bus event for it were dropped)."""
    svc = server.app[SHOP]
    for unsub in svc._unsubscribe:
        unsub()
    svc._unsubscribe.clear()


async def test_prizes_reach_the_shop_without_the_bus(server_factory) -> None:
    server = await server_factory()
    shop_off_the_bus(server)
    lottery = server.app[DANMAKU].lottery
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        lid = await timed_lottery(api, 2)
        for i in range(3):
            assert (await lottery.enter(lid, member(i)))["status"] == "entered"
        status, drawn = await api.call("POST", f"/api/danmaku/lotteries/{lid}/draw")
        assert status == 200 and len(drawn["winners"]) == 2
    keys = [f"{lid}:0", f"{lid}:1"]

    async def granted() -> bool:
        return await grants(server, lid) == keys

    await wait_until_async(granted, what="both prizes granted from the outbox")
    # the lottery is done: off the owed list, its keys kept for verification, then gone
    redis = server.runtime.redis
    await lottery.deliver_owed(force=True)
    assert await redis.zscore(lottery.hub.keys.lotteries_owed(), lid) is None
    for part in ("meta", "entrants", "winners"):
        ttl = await redis.ttl(lottery.hub.keys.lottery(lid, part))
        assert 0 < ttl <= server.config.danmaku.lottery_retention_s, (part, ttl)


async def test_a_draw_whose_delivery_failed_is_delivered_later_once(server_factory) -> None:
    server = await server_factory()
    shop_off_the_bus(server)
    lottery = server.app[DANMAKU].lottery
    real_put = lottery.outbox.put

    async def redis_error(*events):
        raise ConnectionError("Redis went away between the draw and the delivery")

    lottery.outbox.put = redis_error  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        lid = await timed_lottery(api, 1)
        assert (await lottery.enter(lid, member(1)))["status"] == "entered"
        status, drawn = await api.call("POST", f"/api/danmaku/lotteries/{lid}/draw")
        assert status == 200 and drawn["state"] == "drawn"
    assert await grants(server, lid) == []  # nothing reached the shop
    assert await lottery.hub.redis.zscore(lottery.hub.keys.lotteries_owed(), lid) is not None
    lottery.outbox.put = real_put  # type: ignore[method-assign]
    assert await lottery.deliver_owed(force=True) == 1
    assert await lottery.deliver_owed(force=True) == 0  # put once

    async def granted() -> bool:
        return await grants(server, lid) == [f"{lid}:0"]

    await wait_until_async(granted, what="the owed prize granted")


async def test_shop_down_during_the_draw_grants_when_back(server_factory) -> None:
    server = await server_factory()
    svc = server.app[SHOP]
    shop_off_the_bus(server)
    await svc.prize_outbox.stop()  # the shop is not reading the outbox
    lottery = server.app[DANMAKU].lottery
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        lid = await timed_lottery(api, 3)
        for i in range(3):
            await lottery.enter(lid, member(i))
        status, _ = await api.call("POST", f"/api/danmaku/lotteries/{lid}/draw")
        assert status == 200
    before = await grant_count(server)
    assert await grants(server, lid) == []
    svc.prize_outbox.start()  # back: everything owed arrives, once

    async def granted() -> bool:
        return await grants(server, lid) == [f"{lid}:{n}" for n in range(3)]

    await wait_until_async(granted, what="prizes granted after the shop came back")
    assert await grant_count(server) == before + 3


async def test_room_keys_expire(server_factory) -> None:
    server = await server_factory(danmaku={"room_ttl_s": 3600})
    viewer = await join(server, ROOM, "chatty")
    try:
        await viewer.call("comment", {"text": "hello"})
        await viewer.call("like", {"count": 3})
        hub = server.app[DANMAKU].hub
        redis = server.runtime.redis

        async def ttl(key: str) -> int:
            return int(await redis.ttl(key))

        history, likes = hub.keys.history(ROOM), hub.keys.likes(ROOM)
        await wait_until_async(lambda: _positive(ttl(history)), what="history TTL")
        await wait_until_async(lambda: _positive(ttl(likes)), what="likes TTL")
        assert await ttl(history) <= 3600 and await ttl(likes) <= 3600
    finally:
        await viewer.close()


async def _positive(value) -> bool:
    return (await value) > 0


async def wait_until_async(cond, timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
