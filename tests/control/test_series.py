"""The live room's series (issue 20, contracts.md) with real components: ffmpeg publishes
over RTMP, an HTTP-FLV and a WS-FLV viewer watch, a Socket.IO viewer comments and likes,
a buyer orders and pays; the series (1 s steps here) shows it all step by step, the live
panel's comments/s is not 0 during the show, and after the end the points and the show's
summary (peak and unique viewers) come from the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from control.api import CONTROL
from control.models import series_points
from core.tokens import issue_token
from tests.conftest import TEST_SECRET
from tests.control.conftest import CONTROL_TEST_SETTINGS, database_params, make_staff, wait_for
from tests.control.publisher import start_ffmpeg, stop
from tests.danmaku.helpers import Viewer, token


async def _watch_flv(session: aiohttp.ClientSession, url: str, got: list[int]) -> None:
    async with session.get(url) as r:
        assert r.status == 200
        async for chunk in r.content.iter_any():
            got[0] += len(chunk)


async def _watch_ws(session: aiohttp.ClientSession, url: str, got: list[int]) -> None:
    async with session.ws_connect(url) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                got[0] += len(msg.data)


def _t(point: dict[str, Any]) -> float:
    return datetime.fromisoformat(point["t"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(params=database_params())
async def live_server(request: pytest.FixtureRequest, server_factory, pg_database) -> Any:
    sections: dict[str, Any] = {
        "control": {
            **CONTROL_TEST_SETTINGS,
            "series_step": 1,
            "series_sample": 0.2,
            "series_flush": 1,
        },
        "danmaku": {"presence_interval_s": 0.2},
        "shop": {"require_recipient": False},
    }
    if request.param == "postgres":
        sections["database"] = {"url": await pg_database()}
    return await server_factory(**sections)


async def test_series_of_a_real_show(live_server) -> None:
    server = live_server
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        api, op = staff.api, staff.operator
        ok = staff.ok

        product = await ok(
            "POST",
            "/api/products",
            {"title": "tea", "skus": [{"price_fen": 4200, "stock": 10}]},
            201,
        )
        b = await ok(
            "POST",
            "/api/broadcasts",
            {
                "title": "series",
                "scheduled_start": datetime.now(UTC).isoformat(),
                "anchor_id": staff.ids["anchor"],
                "product_ids": [product["id"]],
            },
            201,
        )
        bid, room = b["id"], f"{b['app']}/{b['stream']}"
        push = await ok("GET", f"/api/broadcasts/{bid}/push")
        ffmpeg = await start_ffmpeg(push["url"], seconds=60)
        tasks: list[asyncio.Task[None]] = []
        viewer = Viewer()
        try:
            await wait_for(lambda: _state_is(api, op, bid, "live"), "live", timeout=30)
            play = await ok("GET", f"/api/broadcasts/{bid}/play")
            flv_bytes, ws_bytes = [0], [0]
            tasks.append(asyncio.create_task(_watch_flv(session, play["http_flv"], flv_bytes)))
            tasks.append(asyncio.create_task(_watch_ws(session, play["ws_flv"], ws_bytes)))
            await wait_for(
                _now(lambda: flv_bytes[0] and ws_bytes[0]), "media to both viewers", timeout=60
            )

            await viewer.connect(server.http_url, {"room": room, "token": token("fan1")})
            for i in range(5):
                assert (await viewer.call("comment", f"hello {i}"))["ok"]
            await viewer.call("like", {"count": 3})

            async def comments_per_s() -> bool:
                stats = await ok("GET", f"/api/broadcasts/{bid}/stats")
                return bool(stats["comments"] == 5 and stats["comments_per_s"] > 0)

            await wait_for(comments_per_s, "comments/s above 0 during the show", timeout=60)

            order = await ok(
                "POST",
                "/api/orders",
                {
                    "user_id": "fan1",
                    "sku_id": product["skus"][0]["id"],
                    "quantity": 1,
                    "broadcast_id": bid,
                    "idempotency_key": "series-1",
                },
                201,
            )
            viewer_token = issue_token(TEST_SECRET, "fan1", "fan1")
            got, pay = await api.call(
                "POST",
                f"/api/orders/{order['id']}/pay",
                headers={"X-Viewer-Token": viewer_token},
            )
            assert got == 200, pay
            async with session.post(pay["payment"]["sim_pay_url"]) as r:
                assert r.status == 200

            last: list[Any] = [None]

            async def series_shows_it() -> dict[str, Any] | None:
                s = await ok("GET", f"/api/broadcasts/{bid}/series")
                last[0] = s
                pts = s["points"]
                sums = {
                    k: sum(p[k] for p in pts) for k in ("comments", "likes", "orders", "gmv_fen")
                }
                watched = [
                    p
                    for p in pts
                    if p["viewers_by_protocol"]["flv"] >= 1
                    and p["viewers_by_protocol"]["ws-flv"] >= 1
                ]
                healthy = [
                    p
                    for p in pts
                    if (p["bitrate_in_kbps"] or 0) > 0
                    and (p["fps"] or 0) > 0
                    and p["keyframe_interval_s"]
                ]
                if (
                    sums == {"comments": 5, "likes": 3, "orders": 1, "gmv_fen": 4200}
                    and watched
                    and healthy
                ):
                    return s
                return None

            try:
                series = await wait_for(series_shows_it, "the series to show the show", timeout=60)
            except AssertionError:
                raise AssertionError(f"the series never showed the show: {last[0]}") from None
            # ffmpeg sends a keyframe every 25 frames at 25 fps: a 1 s GOP
            gops = [p["keyframe_interval_s"] for p in series["points"] if p["keyframe_interval_s"]]
            assert gops and all(0.8 <= g <= 1.2 for g in gops), gops
            assert series["broadcast_id"] == bid and series["step_s"] == 1
            assert series["started_at"] is not None and series["ended_at"] is None
            points = series["points"]
            steps = [_t(p) for p in points]
            assert steps == sorted(steps) and len(set(steps)) == len(steps)
            assert all(t == int(t) for t in steps)
            for p in points:
                assert set(p) >= {
                    "t", "viewers", "viewers_by_protocol", "comments", "likes", "orders",
                    "gmv_fen", "refunded_fen", "bitrate_in_kbps", "fps",
                    "keyframe_interval_s", "dropped_viewers",
                }  # fmt: skip
                assert p["viewers"] == sum(p["viewers_by_protocol"].values())
            assert max(p["viewers"] for p in points) >= 2
            # ?since=: the step at since (it may still grow) and the newer ones
            since = points[-1]["t"]
            newer = await ok("GET", f"/api/broadcasts/{bid}/series?since={since}")
            assert newer["points"] and all(_t(p) >= _t(points[-1]) for p in newer["points"])
            assert newer["points"][0]["t"] == since
            got, _ = await api.call("GET", f"/api/broadcasts/{bid}/series?since=yesterday", op)
            assert got == 400
            # the anchor reads their own broadcast's series; a moderator does not
            got, _ = await api.call("GET", f"/api/broadcasts/{bid}/series", staff.anchor)
            assert got == 200
            got, _ = await api.call("GET", f"/api/broadcasts/{bid}/series", staff.moderator)
            assert got == 403

            # while live, finished steps are written to the database every series_flush
            engine = server.app[CONTROL].engine
            assert engine is not None

            async def flushed() -> bool:
                async with engine.connect() as conn:
                    n = await conn.scalar(
                        sa.select(sa.func.count()).where(series_points.c.broadcast_id == bid)
                    )
                return bool(n)

            await wait_for(flushed, "finished steps in the database while live", timeout=20)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await task
            with contextlib.suppress(Exception):
                await viewer.close()
            await stop(ffmpeg)

        await ok("POST", f"/api/broadcasts/{bid}/end", {"reason": "done"})

        async def final_summary() -> dict[str, Any] | None:
            s = await ok("GET", f"/api/broadcasts/{bid}/summary")
            return s if s["final"] else None

        summary = await wait_for(final_summary, "the show's summary", timeout=60)
        assert summary["peak_viewers"] >= 2 and summary["peak_at"] is not None
        assert summary["unique_viewers"] == 1  # both viewers watched from 127.0.0.1
        assert summary["comments"] == 5 and summary["likes"] == 3
        assert summary["orders"] == 1 and summary["gmv_fen"] == 4200
        assert summary["duration_s"] > 0 and summary["ended_at"] is not None

        # after the end the points come from the database: drop the Redis copy
        redis = server.runtime.redis
        keys = [k async for k in redis.scan_iter(match=f"berrylive:control:series:{bid}:*")]
        assert keys
        await redis.delete(*keys)
        after = await ok("GET", f"/api/broadcasts/{bid}/series")
        assert after["ended_at"] is not None
        assert sum(p["comments"] for p in after["points"]) == 5
        assert sum(p["gmv_fen"] for p in after["points"]) == 4200
        async with engine.connect() as conn:
            stored = await conn.scalar(
                sa.select(sa.func.count()).where(series_points.c.broadcast_id == bid)
            )
        assert stored == len(after["points"]) and stored >= 1

        # an ended broadcast takes no card and no flash sale
        got, body = await api.call(
            "POST", f"/api/broadcasts/{bid}/card", op, json={"product_id": product["id"]}
        )
        assert (got, body["error"]["code"]) == (409, "broadcast_ended"), body
        got, body = await api.call(
            "POST",
            "/api/flash-sales",
            op,
            json={
                "broadcast_id": bid,
                "sku_id": product["skus"][0]["id"],
                "sale_price_fen": 100,
                "sale_stock": 1,
                "starts_at": "2030-01-01T00:00:00Z",
                "ends_at": "2030-01-01T01:00:00Z",
            },
        )
        assert (got, body["error"]["code"]) == (409, "broadcast_ended"), body


async def _state_is(api: Any, token_: str, bid: int, state: str) -> bool:
    got, b = await api.call("GET", f"/api/broadcasts/{bid}", token_)
    return bool(got == 200 and b["state"] == state)


def _now(cond: Callable[[], Any]) -> Callable[[], Any]:
    async def probe() -> Any:
        return cond()

    return probe


async def test_comments_count_for_a_broadcast_scheduled_before_a_restart(tmp_path) -> None:
    """The hub learns a room's broadcast from ``broadcast.*`` events; one scheduled before
    the node started is unknown to it, and its comments came without a broadcast id: the
    live panel said 0 comments/s (issue 20). Control now credits them to the room's
    broadcast."""
    from tests.conftest import make_config, start_server
    from tests.control.conftest import Api

    cfg = make_config(
        tmp_path / "node",
        control=dict(CONTROL_TEST_SETTINGS),
        danmaku={"presence_interval_s": 0.2},
    )
    first = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as session:
            staff = await make_staff(first, session)
            got, b = await staff.api.call(
                "POST",
                "/api/broadcasts",
                staff.operator,
                json={"title": "before", "scheduled_start": "2030-01-01T12:00:00Z"},
            )
            assert got == 201
    finally:
        await first.runner.cleanup()
    second = await start_server(cfg)  # the same data dir and database: a restart
    viewer = Viewer()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(second.http_url, session)
            room = f"{b['app']}/{b['stream']}"
            await viewer.connect(second.http_url, {"room": room, "token": token("fan2")})
            for i in range(3):
                assert (await viewer.call("comment", f"after restart {i}"))["ok"]

            async def counted() -> bool:
                got, stats = await api.call(
                    "GET", f"/api/broadcasts/{b['id']}/stats", staff.operator
                )
                assert got == 200, stats
                return bool(stats["comments"] == 3 and stats["comments_per_s"] > 0)

            await wait_for(counted, "the comments to count for the broadcast", timeout=20)
    finally:
        with contextlib.suppress(Exception):
            await viewer.close()
        await second.runner.cleanup()
