"""LL-HLS viewers reach the console: the live overview (``GET /api/streams``), the room's
stats and its minute series count plain HLS players of a broadcast published by ffmpeg."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tests.control.conftest import CONTROL_TEST_SETTINGS, make_staff
from tests.control.publisher import start_ffmpeg, stop
from tests.mediautil import wait_for
from tests.relay.test_hls_viewers import play


async def test_hls_viewers_in_overview_stats_and_series(server_factory: Any) -> None:
    control = {**CONTROL_TEST_SETTINGS, "series_step": 1, "series_sample": 0.2}
    server = await server_factory(control=control, shop={"require_recipient": False})
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        ok = staff.ok
        b = await ok(
            "POST",
            "/api/broadcasts",
            {
                "title": "hls audience",
                "scheduled_start": datetime.now(UTC).isoformat(),
                "anchor_id": staff.ids["anchor"],
            },
            201,
        )
        bid = b["id"]
        push = await ok("GET", f"/api/broadcasts/{bid}/push")
        ffmpeg = await start_ffmpeg(push["url"], seconds=90)
        stop_ = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:

            async def live() -> bool:
                return bool((await ok("GET", f"/api/broadcasts/{bid}"))["state"] == "live")

            await wait_for(live, 30)
            url = (await ok("GET", f"/api/broadcasts/{bid}/play"))["hls"]
            parts = [0]
            tasks = [asyncio.create_task(play(url, f"ua-{i}", stop_, parts)) for i in range(2)]

            async def counted(n: int) -> bool:
                stats = await ok("GET", f"/api/broadcasts/{bid}/stats")
                streams = (await ok("GET", "/api/streams"))["streams"]
                mine = [s for s in streams if (s["app"], s["name"]) == (b["app"], b["stream"])]
                return (
                    stats["viewers"]["hls"] == n
                    and stats["viewers_total"] == n
                    and len(mine) == 1
                    and mine[0]["viewers"].get("hls", 0) == n
                    and mine[0]["viewers_total"] == n
                )

            await wait_for(lambda: counted(2), 60, step=0.2)

            async def in_series() -> bool:
                pts = (await ok("GET", f"/api/broadcasts/{bid}/series"))["points"]
                return any(p["viewers_by_protocol"]["hls"] == 2 and p["viewers"] >= 2 for p in pts)

            await wait_for(in_series, 60, step=0.2)
            stop_.set()
            await asyncio.gather(*tasks)
            assert parts[0] > 0
            await wait_for(lambda: counted(0), 60, step=0.2)
        finally:
            stop_.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stop(ffmpeg)
