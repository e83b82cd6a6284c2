"""Chromium plays, over WHEP, an RTMP stream whose H.264 has B-frames (x264's default 3):
through the server's transcode, ``getStats()`` shows frames decoded growing and audio
packets received. The page and its stats script are the passthrough test's
(``tests/relay/test_whep_browser.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from relay.rtc_stream import has_reordering
from relay.whep import WHEP
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.relay.test_whep_browser import PLAY, STATS


@pytest.fixture
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_tc_browser_bf3.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "3"])


async def test_chromium_plays_a_bframe_stream_through_the_transcode(
    server_factory: Callable[..., Any], bframes: Path
) -> None:
    from playwright.async_api import async_playwright

    server = await server_factory(
        webrtc={"udp_port": 0, "host": "127.0.0.1", "consent_timeout": 5.0}
    )
    proc = await start_publisher(server.push_url("bf"), bframes, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", "bf")) is not None and h.gop_valid, 20)
    await wait_for(lambda: len(registry.get("live", "bf").gop) > 8, 10)
    hub = registry.get("live", "bf")
    assert has_reordering(hub.gop)
    log: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(),
                args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
                headless=True,
            )
            try:
                page = await browser.new_page()
                page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
                result: dict[str, Any] = await page.evaluate(
                    PLAY, f"{server.http_url}/whep/live/bf"
                )
                assert result["status"] == 201, (result, log)

                async def stats() -> dict[str, Any]:
                    return dict(await page.evaluate(STATS))

                await wait_for(lambda: page.evaluate("window.whep.first !== null"), 30, step=0.05)
                first = await stats()
                print(f"\nWHEP POST -> first frame decoded (transcoded): {first['first']:.0f} ms")

                last: dict[str, Any] = {}

                async def growing() -> bool:
                    now = last["stats"] = await stats()
                    return bool(
                        now["video"]["framesDecoded"] >= first["video"]["framesDecoded"] + 50
                        and now["audio"]
                        and now["audio"]["packetsReceived"] > 50
                    )

                try:
                    await wait_for(growing, 30, step=0.2)
                except AssertionError:
                    figures = [s.stats() for s in server.app[WHEP].streams.streams.values()]
                    raise AssertionError(f"{first=} {last=} {figures=} {log[-20:]}") from None
                print(f"Chromium getStats: {await stats()}")
                (stream,) = server.app[WHEP].streams.streams.values()
                assert stream.video_transcoder is not None
                pid = stream.video_transcoder.pid
            finally:
                await browser.close()
        # the browser is gone without a DELETE: the session ends, and with it the ffmpeg
        await wait_for(lambda: hub.stats()["viewers"].get("whep") is None, 60, step=0.2)
        await wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)
    finally:
        await stop(proc)
