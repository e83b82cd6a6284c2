"""Lotteries: 2000 concurrent entries across two nodes, auditable draws, keyword and instant."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import aiohttp
import pytest

from core.redis import EmbeddedValkey
from core.tokens import Role, Viewer
from danmaku.draw import verify
from danmaku.rooms import Member
from danmaku.service import DANMAKU
from tests.danmaku.helpers import join, staff_api, wait_until

ROOM = "live/lottery"


def fake_member(i: int) -> Member:
    viewer = Viewer(user_id=f"user{i:05d}", nick=f"n{i}", role=Role.VIEWER, expires=2e9)
    return Member(sid=f"sid{i}", conn=None, viewer=viewer, role=Role.VIEWER, room=ROOM)


@pytest.fixture
async def valkey(tmp_path):
    vk = EmbeddedValkey(tmp_path / "shared-redis", persist=False)
    await vk.start()
    yield vk
    await vk.stop()


async def test_2000_concurrent_entries_10_prizes_auditable(valkey, server_factory) -> None:
    n1 = await server_factory("n1", redis={"url": valkey.url})
    n2 = await server_factory("n2", redis={"url": valkey.url})
    watcher = await join(n2, ROOM, "watcher")
    prizes: list[dict] = []
    barriers: set[str] = set()

    def seen(e) -> None:  # one subscription: what each node sent arrives in its order
        if e.topic == "lottery.prize":
            prizes.append(e.data)
        elif e.topic == "test.barrier":
            barriers.add(e.data["node"])

    n1.runtime.bus.subscribe("*", seen)
    async with aiohttp.ClientSession() as session:
        api = await staff_api(n1, session)
        status, lot = await api.call(
            "POST",
            "/api/danmaku/lotteries",
            json={
                "room": ROOM,
                "title": "Spring tea",
                "prizes": [{"name": "Tea", "stock": 4, "sku": "T-1"}, {"name": "Cup", "stock": 6}],
                "entry": "button",
                "window_s": 120,
                "mode": "timed",
            },
        )
        assert status == 201, lot
        lid = lot["lottery_id"]
        assert lot["state"] == "open" and len(lot["commitment"]) == 64 and "seed" not in lot
        status, _ = await api.call("POST", "/api/danmaku/lotteries", "moderator", json={})
        assert status == 403

        s1, s2 = n1.app[DANMAKU].lottery, n2.app[DANMAKU].lottery
        members = [fake_member(i) for i in range(2000)]
        attempts = [(s1 if i % 2 else s2).enter(lid, m) for i, m in enumerate(members)]
        attempts += [(s2 if i % 2 else s1).enter(lid, members[i]) for i in range(0, 2000, 10)]
        results = await asyncio.gather(*attempts)
        statuses = Counter(r["status"] for r in results)
        assert statuses == {"entered": 2000, "duplicate": 200}

        # two nodes draw at once: one draw happens
        draw1 = api.call("POST", f"/api/danmaku/lotteries/{lid}/draw")
        draw2 = s2.draw_now(lid, s2_actor())
        (status, drawn), _ = await asyncio.gather(draw1, draw2)
        assert status == 200, drawn
        assert drawn["state"] == "drawn" and drawn["remaining"] == 0
        status, audit = await api.call("GET", f"/api/danmaku/lotteries/{lid}?entrants=1")
    assert status == 200
    winners = [w["user_id"] for w in audit["winners"]]
    assert len(winners) == 10 and len(set(winners)) == 10
    assert [w["prize"]["name"] for w in audit["winners"]] == ["Tea"] * 4 + ["Cup"] * 6
    assert len(audit["entrants"]) == 2000 and audit["entrant_count"] == 2000
    assert verify(audit) == winners  # anyone can recompute the draw
    assert hashlib.sha256(audit["seed"].encode()).hexdigest() == lot["commitment"]
    await wait_until(lambda: len(prizes) == 10, what="10 lottery.prize events")
    # never more: a barrier sent by each node after the draw arrives after anything that
    # node sent before it (per-node order on the bus), so a duplicate would be in by now
    for node in (n1, n2):
        await node.runtime.bus.publish("test.barrier", {"node": node.runtime.node_id})
    await wait_until(lambda: len(barriers) == 2, what="both nodes' barriers")
    assert len(prizes) == 10
    assert sorted(p["user_id"] for p in prizes) == sorted(winners)
    tea = next(p for p in prizes if p["prize"]["name"] == "Tea")
    assert tea["prize"]["sku"] == "T-1" and tea["lottery_id"] == lid and tea["room"] == ROOM
    # the room saw: open (commitment) -> closed (entrant hash) -> drawn (seed)
    await wait_until(
        lambda: (
            [n["data"]["event"] for n in watcher.notices if n["type"] == "lottery"]
            == ["open", "closed", "drawn"]
        ),
        what="lottery notices in order",
    )
    opened, closed, done = (n["data"] for n in watcher.notices if n["type"] == "lottery")
    assert opened["commitment"] == lot["commitment"] and "seed" not in opened
    assert closed["entrants_hash"] == audit["entrants_hash"] and closed["entrants"] == 2000
    assert done["seed"] == audit["seed"] and [w["user_id"] for w in done["winners"]] == winners
    await watcher.close()


def s2_actor():
    from danmaku.moderation import Actor

    return Actor("op2", Role.OPERATOR, "test")


async def test_keyword_entry_timed_draw_and_winner_told(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 100.0})
    viewers = [await join(server, ROOM, f"v{i}") for i in range(6)]
    anon = await join(server, ROOM)
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, lot = await api.call(
            "POST",
            "/api/danmaku/lotteries",
            json={
                "room": ROOM,
                "prizes": [{"name": "Coupon 10", "stock": 2, "coupon": "C10"}],
                "keyword": "我要 抽奖",
                "window_s": 2,
            },
        )
        assert status == 201, lot
        lid = lot["lottery_id"]
        for v in viewers:
            await wait_until(lambda v=v: v.of("comments") or v.of("joined"), what="ready")
        acks = [await v.call("comment", "我要  抽奖") for v in viewers[:5]]
        assert all(a["lottery"]["status"] == "entered" for a in acks), acks
        again = await viewers[0].call("comment", "我要 抽奖")
        assert again["lottery"]["status"] == "duplicate"
        chat = await viewers[5].call("comment", "just chatting")
        assert "lottery" not in chat
        wrong = await viewers[5].call("lottery_enter", {"lottery_id": lid})
        assert wrong["error"]["code"] == "wrong_entry"
        assert (await anon.call("lottery_enter", {"lottery_id": lid}))["error"]["code"] in (
            "wrong_entry",
            "not_authenticated",
        )
        # the timer closes and draws
        await wait_until(
            lambda: any(
                n["type"] == "lottery" and n["data"]["event"] == "drawn" for n in anon.notices
            ),
            timeout=10,
            what="drawn notice",
        )
        status, audit = await api.call("GET", f"/api/danmaku/lotteries/{lid}?entrants=1")
        assert status == 200 and audit["state"] == "drawn"
        status, body = await api.call("POST", f"/api/danmaku/lotteries/{lid}/cancel")
        assert status == 409 and body["error"]["code"] == "bad_state"
        status, body = await api.call("GET", "/api/danmaku/lotteries/nope")
        assert status == 404
    winners = {w["user_id"] for w in audit["winners"]}
    assert len(winners) == 2 and winners <= {f"v{i}" for i in range(5)}
    assert verify(audit) == [w["user_id"] for w in audit["winners"]]
    for i, v in enumerate(viewers):
        if f"v{i}" in winners:
            await wait_until(lambda v=v: v.of("lottery_won"), what="winner told")
            assert v.of("lottery_won")[0]["prize"]["coupon"] == "C10"
        else:
            assert not v.of("lottery_won")
    for v in (*viewers, anon):
        await v.close()


async def test_instant_lottery_never_over_issues(server_factory) -> None:
    server = await server_factory()
    viewers = [await join(server, ROOM, f"v{i}") for i in range(8)]
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, lot = await api.call(
            "POST",
            "/api/danmaku/lotteries",
            json={
                "room": ROOM,
                "prizes": [{"name": "Mug", "stock": 3}],
                "entry": "button",
                "mode": "instant",
                "probability": 1.0,
                "window_s": 60,
            },
        )
        assert status == 201
        lid = lot["lottery_id"]
        acks = await asyncio.gather(
            *(v.call("lottery_enter", {"lottery_id": lid}) for v in viewers)
        )
        statuses = Counter(a["status"] for a in acks)
        assert statuses["won"] == 3 and statuses["closed"] == 5, acks
        status, audit = await api.call("GET", f"/api/danmaku/lotteries/{lid}?entrants=1")
        for bad in (
            {},
            {"room": ROOM, "prizes": []},
            {"room": ROOM, "prizes": [{"name": "x", "stock": 0}]},
            {"room": ROOM, "prizes": [{"name": "x", "stock": 1}], "mode": "lucky"},
            {"room": ROOM, "prizes": [{"name": "x", "stock": 1}], "window_s": 10**9},
            {"room": ROOM, "prizes": [{"name": "x", "stock": 1}], "entry": "keyword"},
        ):
            st, body = await api.call("POST", "/api/danmaku/lotteries", json=bad)
            assert st == 400 and body["error"]["message"], bad
    assert audit["state"] == "drawn" and audit["remaining"] == 0
    winners = [w["user_id"] for w in audit["winners"]]
    assert len(winners) == 3 and verify(audit) == winners
    won = [v for v in viewers if v.of("lottery_won")]
    await wait_until(lambda: sum(1 for v in viewers if v.of("lottery_won")) == 3, what="3 told")
    assert len(won) <= 3
    for v in viewers:
        await v.close()
