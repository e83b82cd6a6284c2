"""hls.js players in headless Chromium count as HLS viewers of the stream while they play
and stop counting once they are gone. Two browser contexts with their own User-Agent are two
viewers; two tabs of one browser (same address, same User-Agent) would be one (docs/hls.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.integration.test_hls_browser import HLSJS, PAGE
from tests.mediautil import make_clip, start_publisher, stop, wait_for


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hlsjsv") / "gop2.flv", 6.0, gop=60, size="320x180")


async def test_hlsjs_players_count_while_they_play(server_factory: Any, clip: Path) -> None:
    from playwright.async_api import async_playwright

    script = HLSJS / "hls.min.js"
    assert script.is_file(), f"{script} missing: make test runs npm ci in tests/hlsjs"
    server = await server_factory(relay={"publisher_linger": 5.0})
    pub = await start_publisher(server.push_url("v"), clip, loop=True)
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "v")) is not None and h.gop_valid, 20)
        hub = registry.get("live", "v")
        assert hub is not None

        def hls() -> int:
            return int(hub.stats()["viewers"].get("hls", 0))

        assert hls() == 0
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
            )
            try:
                contexts = []
                for i in range(2):
                    ctx = await browser.new_context(user_agent=f"hlsjs-viewer-{i}")
                    contexts.append(ctx)
                    page = await ctx.new_page()
                    await page.goto(f"{server.http_url}/healthz")
                    await page.set_content(PAGE)
                    await page.add_script_tag(path=str(script))
                    await page.evaluate("url => start(url)", f"{server.http_url}/live/v.m3u8")

                    async def playing(p: Any = page) -> bool:
                        s = await p.evaluate("sample()")
                        return bool(s["frames"] > 0 and s["t"] > 0.5)

                    await wait_for(playing, 30, step=0.2)
                await wait_for(lambda: hls() == 2, 30, step=0.1)
                await contexts[0].close()
                await wait_for(lambda: hls() == 1, 30, step=0.1)
                await contexts[1].close()
                await wait_for(lambda: hls() == 0, 30, step=0.1)
            finally:
                await browser.close()
    finally:
        await stop(pub)
