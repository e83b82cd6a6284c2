"""An ended broadcast in the console, in Chromium: a short show (ffmpeg, a card pushed
while live) ends; its page turns to the after-show view without reloading (end time, no
push URL, card, lottery or preview), then the replay arrives in place with its product
clip named by the product's title; "Watch replay" opens the player page (not a raw
playlist), which plays. Screenshots under ``tests/artifacts/console/replay/``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.control.conftest import make_staff
from tests.control.publisher import start_ffmpeg, stop
from tests.control.test_console import console_page, sections, shot_dir, sign_in, wait_for

pytestmark = pytest.mark.slow


async def test_console_ended_broadcast_shows_its_replay(
    control_env: dict[str, Any], server_factory: Callable[..., Any]
) -> None:
    server = await server_factory(**sections(control_env))
    shots = shot_dir("replay")
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        api, op = staff.api, staff.operator
        status, p = await api.call(
            "POST",
            "/api/products",
            op,
            json={"title": "Pu-erh cake", "skus": [{"price_fen": 12800, "stock": 5}]},
        )
        assert status == 201, p
        start = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
        b = await staff.create_broadcast(
            title="Pu-erh tasting", scheduled_start=start, product_ids=[p["id"]]
        )
        bid = b["id"]
        _, push = await api.call("GET", f"/api/broadcasts/{bid}/push", op)

        async with console_page(server.http_url) as (page, errors):
            await sign_in(page)
            await page.goto(f"{server.http_url}/console/#/b/{bid}")
            state = page.locator("#state [data-state]")
            proc = await start_ffmpeg(push["url"], seconds=60)
            try:
                await expect(state).to_have_attribute("data-state", "live", timeout=20000)
                status, card = await api.call(
                    "POST", f"/api/broadcasts/{bid}/card", op, json={"product_id": p["id"]}
                )
                assert status == 201, card
                await expect(page.locator("#card-picker li.live")).to_contain_text("Pu-erh cake")

                # a few seconds of explaining, so the card makes a clip
                async def explained() -> bool:
                    await asyncio.sleep(0.2)
                    return datetime.now(UTC) - datetime.fromisoformat(
                        card["pushed_at"].replace("Z", "+00:00")
                    ) > timedelta(seconds=2)

                await wait_for(explained, "2 s of the card on air")
            finally:
                await stop(proc)

            await expect(state).to_have_attribute("data-state", "ended", timeout=20000)
            await expect(page.locator("#after-show #ended-at")).to_contain_text("ended")
            for gone in ("#card-card", "#lottery-card", "#preview-card"):
                await expect(page.locator(gone)).to_have_count(0)
            await expect(page.locator("#push")).to_be_hidden()

            # the replay arrives in place, its clip named by the product
            await expect(state).to_have_attribute("data-state", "replay_ready", timeout=60000)
            await expect(page.locator("#after-show ul.clips")).to_contain_text("Pu-erh cake")
            mp4 = page.locator("#after-show a", has_text="MP4").first
            assert (await mp4.get_attribute("href") or "").endswith(".mp4")
            await page.screenshot(path=str(shots / "1-after-show.png"), full_page=True)

            # the player page plays the replay and lists the clip
            await page.click("#watch-replay")
            await expect(page.locator("#replay-status")).to_contain_text("Playing")
            await page.wait_for_function(
                "() => document.querySelector('#replay-video').readyState >= 2"
            )
            # the same replay through its HLS playlist (hls.js in Chromium)
            await page.click("#play-hls")
            await expect(page.locator("#replay-status")).to_contain_text("Playing HLS")
            await page.wait_for_function(
                "() => { const v = document.querySelector('#replay-video');"
                " return v.readyState >= 2 && !v.currentSrc.endsWith('.mp4'); }"
            )
            await expect(page.locator("#main")).to_contain_text("Product clips")
            await expect(page.locator("#main table").last).to_contain_text("Pu-erh cake")
            await page.screenshot(path=str(shots / "2-player.png"), full_page=True)
            assert not errors, errors
