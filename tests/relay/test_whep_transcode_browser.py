"""Chromium plays, over WHEP, an RTMP stream whose H.264 has B-frames (x264's default 3):
through the server's transcode, ``getStats()`` shows frames decoded growing and audio
packets received. The page and its stats script are the passthrough test's
(``tests/relay/whep_util.py``, shared with ``tests/relay/test_whep_browser.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from relay.rtc_stream import has_reordering
from relay.whep import WHEP
from tests.mediautil import make_clip, stop, wait_for
from tests.relay.whep_util import chromium_whep, publish


@pytest.fixture
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_tc_browser_bf3.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "3"])


async def test_chromium_plays_a_bframe_stream_through_the_transcode(
    server_factory: Callable[..., Any], bframes: Path
) -> None:
    server = await server_factory(
        webrtc={"udp_port": 0, "host": "127.0.0.1", "consent_timeout": 5.0}
    )
    proc = await publish(server, "bf", bframes)
    hub = server.app[REGISTRY].get("live", "bf")
    assert has_reordering(hub.gop)
    try:
        async with chromium_whep(f"{server.http_url}/whep/live/bf") as player:
            first = await player.first_frame()
            print(f"\nWHEP POST -> first frame decoded (transcoded): {first['first']:.0f} ms")
            try:
                await player.decoding(first)
            except AssertionError as e:
                figures = [s.stats() for s in server.app[WHEP].streams.streams.values()]
                raise AssertionError(f"{e} {figures=}") from None
            print(f"Chromium getStats: {await player.stats()}")
            (stream,) = server.app[WHEP].streams.streams.values()
            assert stream.video_transcoder is not None
            pid = stream.video_transcoder.pid
        # the browser is gone without a DELETE: the session ends, and with it the ffmpeg
        await wait_for(lambda: hub.stats()["viewers"].get("whep") is None, 60, step=0.2)
        await wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)
    finally:
        await stop(proc)
