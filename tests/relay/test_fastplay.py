"""The HTTP-FLV fast path in front of aiohttp: the request sniffer, and a real server where
plain plays are answered directly while everything else still reaches aiohttp."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from media import flv
from media.frame import Kind
from relay import REGISTRY
from relay.fastplay import (
    HAND_OVER,
    MAX_HEAD,
    NEED_MORE,
    PlayRequest,
    PlaySite,
    parse_play_request,
)
from relay.hub import PublisherInfo
from tests.mediautil import wait_for

PLAY = (
    b"GET /live/room1.flv?token=abc HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nRange: bytes=0-\r\n\r\n"
)

AVC_HDR = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef"
AAC_HDR = b"\xaf\x00\x12\x10"


# -- the sniffer (sans-I/O) -------------------------------------------------------------


def test_plain_play_is_recognised_whole_and_split_anywhere() -> None:
    req = parse_play_request(PLAY)
    assert req == PlayRequest("live", "room1", "token=abc", False, len(PLAY))
    for cut in range(len(PLAY)):
        assert parse_play_request(PLAY[:cut]) == NEED_MORE, cut
    http10 = parse_play_request(PLAY.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert isinstance(http10, PlayRequest) and http10.http10
    # what follows the head is the caller's business; the head length says where it ends
    more = parse_play_request(PLAY + b"GET / HTTP/1.1\r\n")
    assert isinstance(more, PlayRequest) and more.head_len == len(PLAY)


def test_everything_else_goes_to_the_full_http_stack() -> None:
    others = [
        b"POST /live/a.flv HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HEAD /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /live/a.flv HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /live/a.flv  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/%61.flv HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a/b/c.flv HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/a.flv HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /live/a.flv HTTP/1.1\r\n folded: yes\r\n\r\n",
        b"GET /live/a.flv HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /live/a.flv?\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01",  # a TLS client hello
        b"\x03\x00\x00\x00",  # an RTMP handshake on the wrong port
        b"get /live/a.flv HTTP/1.1\r\n\r\n",
    ]
    for raw in others:
        assert parse_play_request(raw) == HAND_OVER, raw
    huge = b"GET /live/a.flv HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD
    assert parse_play_request(huge) == HAND_OVER  # no end in sight: aiohttp's limits apply


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    verdict = parse_play_request(data)
    assert verdict in (NEED_MORE, HAND_OVER) or isinstance(verdict, PlayRequest)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PLAY) - 1), st.integers(0, 255))
def test_mutated_plays_never_raise_and_stay_consistent(pos: int, byte: int) -> None:
    data = PLAY[:pos] + bytes([byte]) + PLAY[pos + 1 :]
    verdict = parse_play_request(data)
    if isinstance(verdict, PlayRequest):
        assert verdict.head_len <= len(data)
        assert data[verdict.head_len - 4 : verdict.head_len] == b"\r\n\r\n"
        assert data.startswith(b"GET /")


# -- a real server ----------------------------------------------------------------------


def _feed(hub_pub, seconds: float = 1.0) -> None:
    """A synthetic live stream: headers, then 30 fps video with a keyframe each second."""
    hub_pub.push(Kind.VIDEO, 0, AVC_HDR)
    hub_pub.push(Kind.AUDIO, 0, AAC_HDR)
    for i in range(int(30 * seconds)):
        frame = (b"\x17" if i % 30 == 0 else b"\x27") + b"\x01\x00\x00\x00" + bytes(200)
        hub_pub.push(Kind.VIDEO, i * 33, frame)


async def _head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = raw.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


async def _dechunk(reader: asyncio.StreamReader, want: int) -> bytes:
    body = b""
    while len(body) < want:
        size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    return body


async def test_plain_play_is_answered_directly_and_decodes(server) -> None:
    registry = server.app[REGISTRY]
    pub = registry.publish("live", "fast", PublisherInfo("test"))
    _feed(pub)
    hub = registry.get("live", "fast")
    assert hub.ready
    port = server.runtime.http_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /live/fast.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for i in range(len(request)):  # one byte per segment
        writer.write(request[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)
    status, headers = await _head(reader)
    assert status == "HTTP/1.1 200 OK"
    assert headers["server"] == "berrylive"  # the fast path answered
    assert headers["content-type"] == "video/x-flv"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["access-control-allow-origin"] == "*"
    body = await _dechunk(reader, 1)  # the prelude is one chunk
    items = list(flv.FlvDemuxer().feed(body))
    header = items[0]
    assert isinstance(header, flv.FlvHeader) and header.has_audio and header.has_video
    video = [t for t in items[1:] if isinstance(t, flv.FlvTag) and t.tag_type == flv.TAG_VIDEO]
    assert flv.parse_video_header(video[0].body).sequence_header
    assert flv.parse_video_header(video[1].body).keyframe  # the GOP cache, at once
    assert hub.stats()["viewers"].get("flv") == 1
    # Live frames follow on the same connection.
    pub.push(Kind.VIDEO, 40 * 33, b"\x27\x01\x00\x00\x00" + b"\x42" * 300)
    tail = await _dechunk(reader, 1)
    assert b"\x42" * 300 in tail
    writer.close()
    await wait_for(lambda: hub.stats()["viewers"].get("flv", 0) == 0, 5)


async def test_http10_play_is_unchunked_and_ends_with_the_stream(server_factory) -> None:
    srv = await server_factory(relay={"publisher_linger": 0.1})
    registry = srv.app[REGISTRY]
    pub = registry.publish("live", "old", PublisherInfo("test"))
    _feed(pub)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.runtime.http_port)
    writer.write(b"GET /live/old.flv HTTP/1.0\r\n\r\n")
    status, headers = await _head(reader)
    assert status == "HTTP/1.0 200 OK" and "transfer-encoding" not in headers
    assert headers["connection"] == "close"
    assert (await reader.readexactly(3)) == b"FLV"
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", srv.runtime.http_port)
    writer2.write(b"GET /live/old.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    await _head(reader2)
    pub.close("unpublished")
    # The chunked viewer gets the last chunk, then both connections end.
    rest = await asyncio.wait_for(reader2.read(), 5)
    assert rest.endswith(b"0\r\n\r\n")
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    writer2.close()


async def test_everything_else_still_reaches_aiohttp(server) -> None:
    registry = server.app[REGISTRY]
    pub = registry.publish("live", "mix", PublisherInfo("test"))
    _feed(pub)
    base = server.http_url
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/live/nobody.flv") as r:  # not live: aiohttp's 404
            assert r.status == 404 and "not live" in await r.text()
        async with s.head(f"{base}/live/mix.flv") as r:  # live? yes, and no viewer made
            assert r.status == 200 and r.headers["Content-Type"] == "video/x-flv"
        assert registry.get("live", "mix").stats()["viewers_total"] == 0
        async with s.post(f"{base}/live/mix.flv", data=b"x") as r:
            assert r.status == 405
        async with s.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with s.ws_connect(f"{base}/live/mix.flv") as ws:  # WS-FLV upgrade
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.BINARY and msg.data.startswith(b"FLV")
    # Garbage gets aiohttp's 400, and a pipelined play is served by aiohttp too.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.runtime.http_port)
    writer.write(b"\x00\x01garbage\r\n\r\n")
    status, _ = await _head(reader)
    assert " 400 " in status, status
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.runtime.http_port)
    writer.write(
        b"GET /live/mix.flv HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, headers = await _head(reader)
    assert status == "HTTP/1.1 200 OK" and "aiohttp" in headers.get("server", "")
    writer.close()


async def test_a_player_that_keeps_sending_is_cut_without_harming_others(server) -> None:
    registry = server.app[REGISTRY]
    pub = registry.publish("live", "chatty", PublisherInfo("test"))
    _feed(pub)
    hub = registry.get("live", "chatty")
    port = server.runtime.http_port
    good_r, good_w = await asyncio.open_connection("127.0.0.1", port)
    good_w.write(b"GET /live/chatty.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    await _head(good_r)
    bad_r, bad_w = await asyncio.open_connection("127.0.0.1", port)
    bad_w.write(b"GET /live/chatty.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    await _head(bad_r)
    await wait_for(lambda: hub.stats()["viewers"].get("flv") == 2, 5)
    try:
        for _ in range(40):
            bad_w.write(b"z" * 4096)
            await bad_w.drain()
    except ConnectionError:
        pass
    await wait_for(lambda: hub.stats()["viewers"].get("flv") == 1, 5)
    await _dechunk(good_r, 1)  # the prelude
    pub.push(Kind.VIDEO, 50 * 33, b"\x27\x01\x00\x00\x00" + b"\x43" * 300)
    assert b"\x43" * 300 in await _dechunk(good_r, 1)
    good_w.close()
    bad_w.close()


async def test_a_connection_that_never_finishes_its_head_is_answered_408(server_factory):
    server = await server_factory(relay={"http_head_timeout": 0.3})
    port = server.runtime.http_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /live/x.flv HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    status, headers = await _head(reader)
    assert " 408 " in status and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b"no request head in time.\r\n"
    writer.close()
    # A prompt request on another connection is unaffected.
    async with aiohttp.ClientSession() as s, s.get(f"{server.http_url}/healthz") as r:
        assert r.status == 200


async def test_play_hooks_take_the_full_path_and_on_stop_is_called(server_factory) -> None:
    from tests.integration.test_media_more import _hook_server

    runner, url, calls = await _hook_server({})
    try:
        srv = await server_factory(ingest={"on_play": url, "on_stop": url})
        pub = srv.app[REGISTRY].publish("live", "hooked", PublisherInfo("test"))
        _feed(pub)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.runtime.http_port)
        writer.write(b"GET /live/hooked.flv?token=t1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await _head(reader)
        assert status == "HTTP/1.1 200 OK" and "aiohttp" in headers["server"]  # asked on_play
        assert [c["action"] for c in calls] == ["on_play"]
        assert calls[0]["param"] == "?token=t1" and calls[0]["protocol"] == "flv"
        await _dechunk(reader, 1)
        writer.close()
        n = 40
        while not any(c["action"] == "on_stop" for c in calls):  # the next frames find it gone
            pub.push(Kind.VIDEO, n * 33, b"\x27\x01\x00\x00\x00" + bytes(200))
            n += 1
            assert n < 400, calls
            await asyncio.sleep(0.05)
        stop = next(c for c in calls if c["action"] == "on_stop")
        assert stop["stream"] == "hooked" and stop["protocol"] == "flv"
    finally:
        await runner.cleanup()


async def test_the_site_listens_through_the_runner_and_stops_with_it() -> None:
    """PlaySite is an ordinary site of its runner: the bound port is public, an app without
    a stream registry is served by aiohttp alone, and ``runner.cleanup()`` stops listening."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/live/x.flv", hello)  # a play path, but no relay here: aiohttp's
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = PlaySite(runner, "127.0.0.1", 0)
    assert site.port == 0
    try:
        await site.start()
        port = site.port
        assert port != 0 and site.address == ("127.0.0.1", port)
        assert site.name == f"http://127.0.0.1:{port}" and site in runner.sites
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/live/x.flv") as r:
                assert r.status == 200 and await r.text() == "hello"
                assert "aiohttp" in r.headers["Server"]
    finally:
        await runner.cleanup()
    assert site not in runner.sites
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
