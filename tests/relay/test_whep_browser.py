"""Chromium plays WHEP for an RTMP-published H.264 + AAC stream.

The page is on another origin than the server (``about:blank``), so the CORS preflight of
the ``application/sdp`` POST is exercised as a real web page would. ``getStats()`` must show
frames decoded growing and audio packets received; the time from the POST to the first
decoded frame is printed (a figure, not asserted: speed belongs to bench/). The page and
its stats script live in ``tests/relay/whep_util.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from tests.mediautil import make_clip, stop, wait_for
from tests.relay.whep_util import chromium_whep, publish


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_browser.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "0"])


async def test_chromium_plays_whep(server_factory: Callable[..., Any], clip: Path) -> None:
    server = await server_factory(
        webrtc={"udp_port": 0, "host": "127.0.0.1", "consent_timeout": 5.0}
    )
    proc = await publish(server, "tv", clip, frames=0)
    registry = server.app[REGISTRY]
    try:
        async with chromium_whep(f"{server.http_url}/whep/live/tv") as player:
            assert player.result["location"].startswith("/whep/live/tv/")
            first = await player.first_frame()
            print(f"\nWHEP POST -> first frame decoded (Chromium): {first['first']:.0f} ms")
            final = await player.decoding(first)
            print(f"Chromium getStats: {final}")
            hub = registry.get("live", "tv")
            assert hub.stats()["viewers"].get("whep") == 1
        # the browser is gone without a DELETE: the session ends on its own
        await wait_for(lambda: hub.stats()["viewers"].get("whep") is None, 60, step=0.2)
    finally:
        await stop(proc)
