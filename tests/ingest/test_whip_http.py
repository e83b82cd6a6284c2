"""WHIP's HTTP resource (RFC 9725) on a real server: auth, errors, CORS, PATCH/DELETE.

The token is the stream's RTMP push credential (the push URL's query string); a forged,
expired, revoked or missing one is 401 before anything else is looked at. Media over a
real WebRTC client is in test_whip_media.py.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from ingest import auth
from ingest.whip import WHIP_SERVER, whip_token
from tests.conftest import TEST_SECRET

OFFER_GARBAGE = "this is not SDP\r\n"


@pytest.fixture
async def server(server_factory):
    """A full server with its WebRTC UDP port on an ephemeral port."""
    return await server_factory(webrtc={"udp_port": 0})


def token(stream: str, app: str = "live", ttl: int = 600, **kw: object) -> str:
    return auth.push_query(TEST_SECRET, app, stream, int(time.time()) + ttl, **kw)  # type: ignore[arg-type]


async def post(
    base: str, path: str, body: str, tok: str | None, ctype: str = "application/sdp"
) -> aiohttp.ClientResponse:
    headers = {"Content-Type": ctype}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    async with aiohttp.ClientSession() as s:
        resp = await s.post(base + path, data=body.encode(), headers=headers)
        await resp.read()
        return resp


async def test_preflight_allows_a_browser_to_post_and_read_location(server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.options(
            server.http_url + "/whip/live/cam",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        ) as resp:
            assert resp.status == 204
            h = resp.headers
            assert h["Access-Control-Allow-Origin"] == "*"
            assert "POST" in h["Access-Control-Allow-Methods"]
            assert "Authorization" in h["Access-Control-Allow-Headers"]
            exposed = {x.strip() for x in h["Access-Control-Expose-Headers"].split(",")}
            assert {"Location", "Link"} <= exposed
            assert h["Accept-Post"] == "application/sdp"
        async with s.options(server.http_url + "/whip/live/cam/abcdefgh1234") as resp:
            assert resp.status == 204
            assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("missing", 401),
        ("forged", 401),
        ("expired", 401),
        ("other stream", 401),
        ("not yet valid", 401),
    ],
)
async def test_bad_tokens_are_401(server, case: str, status: int) -> None:
    now = int(time.time())
    tok: str | None = {
        "missing": None,
        "forged": token("cam")[:-4] + "0000",
        "expired": auth.push_query(TEST_SECRET, "live", "cam", now - 5),
        "other stream": token("another"),
        "not yet valid": auth.push_query(TEST_SECRET, "live", "cam", now + 600, nbf=now + 300),
    }[case]
    resp = await post(server.http_url, "/whip/live/cam", "v=0\r\n", tok)
    assert resp.status == status
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert server.app[WHIP_SERVER].sessions == {}


async def test_revoked_key_is_401(server) -> None:
    tok = token("cam")
    await server.runtime.redis.hset(auth.KEY_VERSIONS, "live/cam", "7")
    resp = await post(server.http_url, "/whip/live/cam", "v=0\r\n", tok)
    assert resp.status == 401
    body = await resp.json()
    assert "revoked" in body["error"]["message"]


async def test_valid_token_then_body_checks(server) -> None:
    tok = token("cam")
    resp = await post(server.http_url, "/whip/live/cam", "v=0\r\n", tok, ctype="text/plain")
    assert resp.status == 415
    resp = await post(server.http_url, "/whip/live/cam", "x" * (70 * 1024), tok)
    assert resp.status == 413
    resp = await post(server.http_url, "/whip/live/cam", OFFER_GARBAGE, tok)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "bad_sdp"
    # the push URL's query works as the token, and on the URL as well
    url = server.push_url("cam")
    assert whip_token(url) and whip_token(url) in url
    resp = await post(server.http_url, "/whip/live/cam", OFFER_GARBAGE, whip_token(url))
    assert resp.status == 400
    resp = await post(server.http_url, "/whip/live/cam?" + whip_token(url), OFFER_GARBAGE, None)
    assert resp.status == 400


async def test_names_patch_and_delete(server) -> None:
    resp = await post(server.http_url, "/whip/live/bad%20name", "v=0\r\n", token("x"))
    assert resp.status in (400, 404)
    async with aiohttp.ClientSession() as s:
        async with s.patch(
            server.http_url + "/whip/live/cam/abcdefgh1234",
            data=b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        ) as resp:
            assert resp.status == 405
            assert "DELETE" in resp.headers["Allow"]
        async with s.delete(server.http_url + "/whip/live/cam/abcdefgh1234") as resp:
            assert resp.status == 404


async def test_edge_refuses_publishing(server_factory) -> None:
    edge = await server_factory(
        "edge",
        server={"role": "edge"},
        relay={"origins": ("http://127.0.0.1:9",)},
        webrtc={"udp_port": 0},
    )
    resp = await post(edge.http_url, "/whip/live/cam", "v=0\r\n", token("cam"))
    assert resp.status == 403


async def aiortc_offer(video_codec: str = "H264") -> tuple[object, str]:
    """A real publisher's offer (aiortc), its video limited to ``video_codec``."""
    from aiortc import AudioStreamTrack, RTCPeerConnection, VideoStreamTrack
    from aiortc.rtcrtpsender import RTCRtpSender

    pc = RTCPeerConnection()
    video = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    codecs = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in (f"video/{video_codec.lower()}", "video/rtx")
    ]
    video.setCodecPreferences(codecs)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_vp8_only_publisher_gets_a_clear_406(server) -> None:
    pc, offer = await aiortc_offer("VP8")
    try:
        assert "VP8" in offer and "H264" not in offer
        resp = await post(server.http_url, "/whip/live/cam", offer, token("cam"))
        assert resp.status == 406
        body = await resp.json()
        assert body["error"]["code"] == "no_codec"
        assert "VP8" in body["error"]["message"]  # says what was offered
        assert server.app[WHIP_SERVER].sessions == {}
    finally:
        await pc.close()  # type: ignore[attr-defined]


async def test_too_many_sessions_is_503_and_disturbs_nobody(server_factory) -> None:
    server = await server_factory(webrtc={"udp_port": 0, "max_sessions": 1})
    first, offer1 = await aiortc_offer()
    second, offer2 = await aiortc_offer()
    try:
        resp = await post(server.http_url, "/whip/live/one", offer1, token("one"))
        assert resp.status == 201
        resp = await post(server.http_url, "/whip/live/two", offer2, token("two"))
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"]["code"] == "unavailable"
        (only,) = server.app[WHIP_SERVER].sessions.values()
        assert only.stream == "one" and not only.closed
    finally:
        await first.close()  # type: ignore[attr-defined]
        await second.close()  # type: ignore[attr-defined]


async def test_an_offer_that_never_connects_disturbs_nobody(server_factory, tmp_path) -> None:
    """A valid POST whose peer never completes ICE (UDP blocked, a tab closed): the live
    RTMP publisher keeps the stream, no event is sent, the session is dropped."""
    from ingest.events import StreamPublished, StreamUnpublished
    from relay.http import REGISTRY
    from tests.mediautil import make_clip, start_publisher, stop, wait_for

    server = await server_factory(webrtc={"udp_port": 0, "connect_timeout": 1.0})
    clip = make_clip(tmp_path / "clip.flv", seconds=4.0)
    rtmp = await start_publisher(server.push_url("cam"), clip, loop=True)
    pc, offer = await aiortc_offer()
    seen: list[object] = []
    offs = [server.runtime.bus.on(c, seen.append) for c in (StreamPublished, StreamUnpublished)]
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "cam")) is not None and h.live, 30)
        resp = await post(server.http_url, "/whip/live/cam", offer, token("cam"))
        assert resp.status == 201  # the answer is never applied: no ICE check ever comes
        await wait_for(lambda: server.app[WHIP_SERVER].sessions == {}, timeout=15)
        hub = registry.get("live", "cam")
        assert hub is not None and hub.live and hub.publisher.info.protocol == "rtmp"
        assert [e for e in seen if getattr(e, "protocol", "") == "whip"] == []
        assert [e for e in seen if isinstance(e, StreamUnpublished)] == []
    finally:
        for off in offs:
            off()
        await pc.close()  # type: ignore[attr-defined]
        await stop(rtmp)
