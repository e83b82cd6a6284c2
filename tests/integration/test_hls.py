"""LL-HLS end to end: playlists fetched by blocking reload during a live stream with a
takeover (another encoder, another resolution) in the middle, each checked by the
structural checker; an edge packages HLS from its own hub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.http import REGISTRY
from tests.cluster.harness import cluster
from tests.mediautil import make_clip, probe, start_publisher, stop, stream_types, wait_for
from tests.relay.hls_check import History, parse


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hlsint")
    return {
        "a": make_clip(d / "a.flv", 6.0, gop=30),
        "b": make_clip(d / "b.flv", 6.0, gop=30, size="480x270"),
    }


async def follow(session: aiohttp.ClientSession, url: str, history: History, until: Any) -> None:
    """Reload ``url`` as an LL-HLS client does (blocking on the preload hint's part) until
    ``until(history)``; every playlist goes through the checker."""
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        pl = history.add(await r.text())
    while not until(history):
        assert pl.preload_hint is not None
        name = pl.preload_hint["URI"].rsplit("part-", 1)[1][: -len(".m4s")]
        msn, part = name.split(".")
        async with session.get(f"{url}?_HLS_msn={msn}&_HLS_part={part}") as r:
            assert r.status == 200, await r.text()
            pl = history.add(await r.text())


async def test_takeover_in_the_middle_keeps_the_playlist_valid(
    server_factory: Any, clips: dict[str, Path]
) -> None:
    server = await server_factory(relay={"publisher_linger": 5.0, "hls_window": 3})
    url = f"{server.http_url}/live/t.m3u8"
    first = await start_publisher(server.push_url("t"), clips["a"], loop=True)
    second = None
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "t")) is not None and h.gop_valid, 20)
        history = History(max_segments=3 + 1)
        async with aiohttp.ClientSession() as session:
            await follow(session, url, history, lambda h: len(h.seen) >= 4)
            assert history.discontinuities == 0
            second = await start_publisher(server.push_url("t"), clips["b"], loop=True)
            # the takeover: a discontinuity, a new map; then the window slides past it
            await follow(session, url, history, lambda h: h.discontinuities >= 1)
            await follow(
                session, url, history,
                lambda h: h.last is not None and h.last.discontinuity_sequence >= 1,
            )  # fmt: skip
            assert len(history.maps) >= 2
            final = history.last
            assert final is not None and len(final.segments) <= 4
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}
        assert {s.get("width") for s in info["streams"] if s["codec_type"] == "video"} == {480}
    finally:
        for proc in (first, second):
            if proc is not None:
                await stop(proc)


@pytest.mark.slow
async def test_an_edge_packages_hls_from_its_own_hub(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin = await c.start("origin-a", "origin")
        edge = await c.start("edge-1", "edge", origins=[origin])
        anchor = await start_publisher(origin.push_url("s"), clips["a"], loop=True)
        try:
            url = f"{edge.http}/live/s.m3u8"

            async def edge_playlist() -> bool:
                async with session.get(url) as r:
                    return r.status == 200

            await wait_for(edge_playlist, 20, step=0.3)
            history = History()
            await follow(session, url, history, lambda h: len(h.seen) >= 3)
            # the parts come from the edge's own packager (its token is not the origin's)
            pl = parse((await (await session.get(url)).read()).decode())
            part = pl.segments[-1].parts[0]["URI"] if pl.segments[-1].parts else None
            assert part is not None
            async with session.get(f"{edge.http}/live/{part}") as r:
                assert r.status == 200 and (await r.read())[4:8] == b"moof"
            async with session.get(f"{origin.http}/live/{part}") as r:
                assert r.status == 404  # the origin packages nothing nobody asked it for
        finally:
            await stop(anchor)
