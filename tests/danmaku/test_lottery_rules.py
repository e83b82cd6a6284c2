"""Lottery rules the platforms require (issue 20): entry after watching N s, a draw among
those still present when the window closes (verifiable), prize kinds and images checked,
one entry per user across nodes (tests/danmaku/test_lottery.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from danmaku.draw import verify
from tests.danmaku.helpers import join, staff_api, wait_until

ROOM = "live/rules"


def body(**kw):
    spec = {
        "room": ROOM,
        "title": "Rules",
        "prizes": [{"name": "5 off", "stock": 5, "coupon": 500, "image_url": "/img/5off.png"}],
        "entry": "button",
        "window_s": 300,
        "mode": "timed",
    }
    spec.update(kw)
    return spec


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"prizes": [{"name": "Tea", "stock": 1, "kind": "product"}]}, "needs sku"),
        ({"prizes": [{"name": "Off", "stock": 1, "kind": "coupon"}]}, "coupon or value_fen"),
        ({"prizes": [{"name": "X", "stock": 1, "kind": "car"}]}, "kind must be"),
        ({"prizes": [{"name": "X", "stock": 1, "image_url": "javascript:alert(1)"}]}, "https"),
        ({"background_url": "http://plain.example/bg.png"}, "https"),
        ({"min_watch_s": 5000}, "min_watch_s"),
        ({"present_at_draw": "yes"}, "present_at_draw"),
        ({"present_at_draw": True, "mode": "instant"}, "timed lotteries only"),
    ],
)
async def test_bad_rules_are_refused_with_a_reason(server, change, needle) -> None:
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, got = await api.call("POST", "/api/danmaku/lotteries", json=body(**change))
        assert status == 400, got
        assert needle in got["error"]["message"], got


async def test_entry_needs_the_watch_time(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 100.0})
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, long_watch = await api.call(
            "POST",
            "/api/danmaku/lotteries",
            json=body(min_watch_s=600, background_url="https://img.example/bg.jpg"),
        )
        assert status == 201, long_watch
        status, short_watch = await api.call(
            "POST", "/api/danmaku/lotteries", json=body(min_watch_s=1)
        )
        assert status == 201, short_watch
    assert long_watch["min_watch_s"] == 600 and long_watch["background_url"].endswith("bg.jpg")
    viewer = await join(server, ROOM, "watcher")
    try:
        early = await viewer.call("lottery_enter", {"lottery_id": long_watch["lottery_id"]})
        assert early["ok"] is False and early["error"]["code"] == "watch_longer", early
        assert 0 < early["error"]["retry_after"] <= 600
        lid = short_watch["lottery_id"]
        while True:  # refused until the watch time has passed, then entered
            got = await viewer.call("lottery_enter", {"lottery_id": lid})
            if got["ok"]:
                break
            assert got["error"]["code"] == "watch_longer", got
            await asyncio.sleep(got["error"]["retry_after"])
        assert got["status"] == "entered", got
    finally:
        await viewer.close()


async def test_drawn_among_those_still_present(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 100.0, "presence_interval_s": 0.2})
    viewers = [await join(server, ROOM, f"p{i}") for i in range(4)]
    try:
        async with aiohttp.ClientSession() as session:
            api = await staff_api(server, session)
            status, lot = await api.call(
                "POST",
                "/api/danmaku/lotteries",
                json=body(present_at_draw=True, prizes=[{"name": "Tea", "stock": 4, "coupon": 1}]),
            )
            assert status == 201, lot
            lid = lot["lottery_id"]
            for v in viewers:
                await wait_until(lambda v=v: any(x["lottery_id"] == lid for x in _open(v)))
                assert (await v.call("lottery_enter", {"lottery_id": lid}))["ok"] is True
            await viewers[0].close()  # leaves before the window closes
            await viewers[1].close()
            status, drawn = await api.call("POST", f"/api/danmaku/lotteries/{lid}/draw")
            assert status == 200, drawn
            assert sorted(w["user_id"] for w in drawn["winners"]) == ["p2", "p3"]
            status, audit = await api.call("GET", f"/api/danmaku/lotteries/{lid}?entrants=1")
            assert status == 200
        assert audit["entrants"] == ["p2", "p3"]
        assert audit["entered"] == ["p0", "p1", "p2", "p3"]
        assert sorted(verify(audit)) == ["p2", "p3"]  # anyone can check it
    finally:
        for v in viewers[2:]:
            await v.close()


def _open(viewer) -> list[dict]:
    joined = viewer.of("joined")[0]["lotteries"]
    notices = [n["data"] for n in viewer.notices if n["type"] == "lottery"]
    return [*joined, *[{"lottery_id": n.get("lottery_id")} for n in notices]]


async def test_entries_obey_the_shops_blocklist_and_limits(server_factory) -> None:
    """The lottery entry goes through the same abuse guard as buying (core.abuse, the
    shop's instance): a blocked account or device is refused, and entries beyond the
    lottery limit per account get rate_limited with a retry time."""
    server = await server_factory(
        danmaku={"rate_capacity": 100.0},
        shop={"lottery_limit_user": 2, "lottery_limit_device": 0, "rate_window": 60},
    )
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        lids = []
        for _ in range(3):
            status, lot = await api.call("POST", "/api/danmaku/lotteries", json=body())
            assert status == 201, lot
            lids.append(lot["lottery_id"])
        status, _ = await api.call(
            "POST", "/api/shop/blocklist", json={"kind": "device", "value": "farm-7"}
        )
        assert status == 201
        greedy = await join(server, ROOM, "greedy")
        farm = await join(server, ROOM, "farmer", device="farm-7")
        try:
            got = [await greedy.call("lottery_enter", {"lottery_id": lid}) for lid in lids]
            assert [g["ok"] for g in got] == [True, True, False], got
            assert got[2]["error"]["code"] == "rate_limited"
            assert got[2]["error"]["retry_after"] >= 1
            refused = await farm.call("lottery_enter", {"lottery_id": lids[0]})
            assert refused["ok"] is False and refused["error"]["code"] == "blocked", refused
        finally:
            await greedy.close()
            await farm.close()
