"""``GET /api/danmaku/lotteries?room=&state=&limit=``: a room's lotteries from its index
(newest first, filtered, bounded), expiring with them; a lottery whose keys are gone
leaves the list and the index."""

from __future__ import annotations

import asyncio

import aiohttp

from danmaku.service import DANMAKU
from tests.danmaku.helpers import staff_api

ROOM, OTHER = "live/listed", "live/elsewhere"


def spec(room: str, title: str) -> dict:
    return {
        "room": room,
        "title": title,
        "prizes": [{"name": "Tea", "stock": 1, "coupon": 100}],
        "entry": "button",
        "window_s": 300,
        "mode": "timed",
    }


async def test_list_a_rooms_lotteries(server) -> None:
    hub = server.app[DANMAKU].hub
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        made = []
        for room, title in [(ROOM, "one"), (ROOM, "two"), (OTHER, "other"), (ROOM, "three")]:
            status, lot = await api.call("POST", "/api/danmaku/lotteries", json=spec(room, title))
            assert status == 201, lot
            made.append(lot)
        status, drawn = await api.call(
            "POST", f"/api/danmaku/lotteries/{made[1]['lottery_id']}/draw"
        )
        assert status == 200, drawn

        q = f"/api/danmaku/lotteries?room={ROOM}"
        status, listed = await api.call("GET", q)
        assert status == 200, listed
        assert [x["title"] for x in listed["items"]] == ["three", "two", "one"]
        first = listed["items"][0]
        assert first["lottery_id"] == made[3]["lottery_id"] and first["state"] == "open"
        assert first["created_by"] and first["remaining"] == 1 and first["created_at"] > 0
        status, only = await api.call("GET", q + "&state=drawn")
        assert [x["title"] for x in only["items"]] == ["two"]
        status, two = await api.call("GET", q + "&limit=2")
        assert [x["title"] for x in two["items"]] == ["three", "two"]
        status, other = await api.call("GET", f"/api/danmaku/lotteries?room={OTHER}")
        assert [x["title"] for x in other["items"]] == ["other"]

        # the index expires (no key without a TTL) and forgets lotteries whose keys are gone
        index = hub.keys.lottery_index(ROOM)
        assert 0 < await hub.redis.ttl(index) <= 300 + hub.config.lottery_retention_s
        await hub.redis.delete(hub.keys.lottery(made[0]["lottery_id"], "meta"))
        status, listed = await api.call("GET", q)
        assert [x["title"] for x in listed["items"]] == ["three", "two"]
        assert await hub.redis.zcard(index) == 2

        for bad in ("", "&state=won", "&limit=0", "&limit=x"):
            path = "/api/danmaku/lotteries?" + (bad[1:] if not bad else f"room={ROOM}{bad}")
            status, err = await api.call("GET", path)
            assert status == 400, (bad, err)
        for role in ("anchor", "moderator"):  # an anchor without a broadcast in this room
            status, err = await api.call("GET", q, role=role)
            assert status == 403, (role, err)


async def test_lotteries_from_before_the_index_are_listed(valkey, server_factory) -> None:
    """A lottery created the old way (its record, no index entry) is listed once a node
    starts (the index is backfilled from Redis); running it again adds nothing twice, and
    the backfilled index expires like the lotteries."""
    n1 = await server_factory("n1", redis={"url": valkey.url})
    hub = n1.app[DANMAKU].hub
    q = f"/api/danmaku/lotteries?room={ROOM}"
    async with aiohttp.ClientSession() as session:
        api = await staff_api(n1, session)
        made = []
        for title in ("old one", "old two", "new"):
            status, lot = await api.call("POST", "/api/danmaku/lotteries", json=spec(ROOM, title))
            assert status == 201, lot
            made.append(lot)
        # the first two as a node that did not keep the index left them: no index entry
        index = hub.keys.lottery_index(ROOM)
        assert await hub.redis.zrem(index, made[0]["lottery_id"], made[1]["lottery_id"]) == 2
        status, listed = await api.call("GET", q)
        assert [x["title"] for x in listed["items"]] == ["new"]

        n2 = await server_factory("n2", redis={"url": valkey.url})
        api2 = await staff_api(n2, session)
        want = ["new", "old two", "old one"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            status, listed = await api2.call("GET", q)
            assert status == 200, listed
            titles = [x["title"] for x in listed["items"]]
            if titles == want or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert titles == want
        assert 0 < await hub.redis.ttl(index) <= 300 + hub.config.lottery_retention_s
        # idempotent: again (as every start does) adds nothing and keeps the order
        assert await n2.app[DANMAKU].lottery.backfill_index() == 0
        assert await hub.redis.zcard(index) == 3
        status, listed = await api.call("GET", q)
        assert [x["title"] for x in listed["items"]] == want
