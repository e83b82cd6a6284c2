"""LL-HLS over HTTP on a real server with a real ffmpeg publisher: playlist, files, blocking
reload, waiter caps, 400/404, PyAV reading the playlist."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from relay.hls_http import HLS
from relay.http import REGISTRY
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.relay.hls_check import History, parse


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hlshttp") / "gop2.flv", 6.0, gop=60)


async def get(url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, dict(r.headers), await r.read()


async def live_server(server_factory: Any, clip: Path, **relay: Any) -> tuple[Any, Any]:
    server = await server_factory(relay={"publisher_linger": 2.0, **relay})
    pub = await start_publisher(server.push_url("s"), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", "s")) is not None and h.gop_valid, 20)
    return server, pub


async def test_playlist_files_and_blocking_reload(server_factory: Any, clip: Path) -> None:
    server, pub = await live_server(server_factory, clip)
    base = f"{server.http_url}/live"
    try:
        status, headers, body = await get(f"{base}/s.m3u8")
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert headers["Cache-Control"] == "no-cache"
        history = History(max_segments=server.config.relay.hls_window + 1)
        pl = history.add(body.decode())
        # files: init, a part, from memory and cacheable
        seg0 = pl.segments[0]
        assert seg0.map_uri is not None and seg0.uri is not None  # a complete segment
        status, headers, init = await get(f"{base}/{seg0.map_uri}")
        assert status == 200 and init[4:8] == b"ftyp"
        assert "immutable" in headers["Cache-Control"] and "max-age" in headers["Cache-Control"]
        # blocking reload: the next part, the request returns when it exists
        for _ in range(4):
            assert pl.preload_hint is not None
            msn, idx = (int(x) for x in pl.preload_hint["URI"].split("part-")[1][:-4].split("."))
            hint = asyncio.create_task(get(f"{base}/{pl.preload_hint['URI']}"))
            status, _h, body = await get(f"{base}/s.m3u8?_HLS_msn={msn}&_HLS_part={idx}")
            assert status == 200, body
            pl = history.add(body.decode())
            listed = {p["URI"] for s in pl.segments for p in s.parts}
            opened = [s for s in pl.segments if s.msn == msn]
            # that part is listed, or its segment closed before it (the next one opened)
            assert pl.preload_hint["URI"] not in listed
            if opened and opened[0].duration is None:
                assert any(u.endswith(f"part-{msn}.{idx}.m4s") for u in listed)
            # the preload hint request was held and served the part as it completed
            hstatus, hheaders, hbody = await hint
            if any(u.endswith(f"part-{msn}.{idx}.m4s") for u in listed):
                assert hstatus == 200 and hbody[4:8] == b"moof"
                assert "immutable" in hheaders["Cache-Control"]
                part_url = f"{base}/s.hls/{_token(pl)}/part-{msn}.{idx}.m4s"
                status, _h, again = await get(part_url)
                assert again == hbody
        # a whole segment: styp + parts; PyAV decodes the playlist
        done = [s for s in pl.segments if s.uri]
        status, _h, seg = await get(f"{base}/{done[-1].uri}")
        assert status == 200 and seg[4:8] == b"styp"
        frames = await asyncio.to_thread(_decode_some, f"{base}/s.m3u8")
        assert frames >= 30
    finally:
        await stop(pub)


def _token(pl: Any) -> str:
    return str(pl.preload_hint["URI"].split("/")[1])


def _decode_some(url: str) -> int:
    n = 0
    with av.open(url, timeout=(20, 15)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        for packet in c.demux(c.streams.video[0]):
            n += len(packet.decode())
            if n >= 30:
                break
    return n


async def test_bad_requests_and_not_live(server_factory: Any, clip: Path) -> None:
    server, pub = await live_server(server_factory, clip)
    base = f"{server.http_url}/live"
    # an origin packages every live stream before anyone asks
    assert "live/s" in server.app[HLS].packagers
    try:
        status, _h, body = await get(f"{base}/s.m3u8")
        assert status == 200
        pl = parse(body.decode())
        last = pl.segments[-1].msn
        for query in (f"_HLS_msn={last + 3}", "_HLS_part=1", "_HLS_msn=x", "_HLS_msn=-1"):
            status, _h, _b = await get(f"{base}/s.m3u8?{query}")
            assert status == 400, query
        assert (await get(f"{base}/nothing.m3u8"))[0] == 404
        assert (await get(f"{base}/s.hls/00000000/seg-0.m4s"))[0] == 404
        token = _token(pl)
        assert (await get(f"{base}/s.hls/{token}/seg-99999.m4s"))[0] == 404
        assert (await get(f"{base}/s.hls/{token}/part-{last + 5}.0.m4s"))[0] == 404
        # stats: the packager is a consumer of the hub, not a viewer
        hub = server.app[REGISTRY].get("live", "s")
        assert hub.stats()["consumers"].get("hls") == 1 and hub.audience == 0
    finally:
        await stop(pub)
    await wait_for(lambda: server.app[REGISTRY].get("live", "s") is None, 10)
    assert (await get(f"{base}/s.m3u8"))[0] == 404
    assert server.app[HLS].packagers == {}


@pytest.mark.parametrize("cap", ["hls_max_waiters_stream", "hls_max_waiters"])
async def test_waiter_caps_and_timeout(server_factory: Any, clip: Path, cap: str) -> None:
    server, pub = await live_server(
        server_factory,
        clip,
        **{cap: 2},
        hls_block_timeout=1.5,
        hls_package_always=False,  # on demand (as on edges): the first request starts it
        hls_idle_timeout=1.0,
    )
    base = f"{server.http_url}/live"
    try:
        got: list[bytes] = []

        async def playlist() -> bool:
            status, _h, body = await get(f"{base}/s.m3u8")  # 503 while the first segment forms
            got.append(body)
            return status == 200

        await wait_for(playlist, 15)
        pl = parse(got[-1].decode())
        far = pl.segments[-1].msn + 2  # allowed, but ~4 s away: longer than the timeout
        url = f"{base}/s.m3u8?_HLS_msn={far}"
        held = [asyncio.create_task(get(url)) for _ in range(2)]
        service = server.app[HLS]
        await wait_for(lambda: service.waiting == 2, 5)
        status, headers, _b = await get(url)
        assert status == 503 and "Retry-After" in headers  # over the per-stream cap: at once
        assert not any(t.done() for t in held)
        # the held ones time out with 503 (their part is still seconds away)
        assert [r[0] for r in await asyncio.gather(*held)] == [503, 503]
        assert service.waiting == 0
        # nobody asks any more: packaging stops, the hub loses its consumer
        hub = server.app[REGISTRY].get("live", "s")
        assert "hls" in hub.stats()["consumers"]
        await wait_for(lambda: not service.packagers, 10)
        assert "hls" not in hub.stats()["consumers"]
    finally:
        await stop(pub)
