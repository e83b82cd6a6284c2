"""The viewer package's HTTP side on a real server: the page, its files, the vendor files (a
fixed list, nothing else of node_modules), the watch info and the demo-only anonymous tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from core.tokens import TokenError, verify_token
from tests.mediautil import operator_token
from viewer.routes import MODULES_DIR, STATIC_DIR, VENDOR


async def _get(base: str, path: str, **kw: Any) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s, s.get(base + path, **kw) as r:
        return r.status, r.content_type, await r.read()


async def _broadcast(server: Any) -> dict[str, Any]:
    token = await operator_token(server)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s,
        s.post(
            server.http_url + "/api/broadcasts",
            json={"title": "Tea", "scheduled_start": datetime.now(UTC).isoformat()},
        ) as r,
    ):
        assert r.status == 201
        return dict(await r.json())


async def test_page_assets_and_vendor(server: Any) -> None:
    base = server.http_url
    status, ctype, body = await _get(base, "/watch/live/shop1")
    assert (status, ctype) == (200, "text/html")
    assert b'src="/viewer/assets/main.js"' in body
    names = ("main.js", "player.js", "chat.js", "shop.js", "recipient.js", "sheet.js")
    for name in (*names, "lottery.js", "replay.js", "api.js"):
        status, ctype, body = await _get(base, f"/viewer/assets/{name}")
        assert (status, ctype) == (200, "text/javascript"), name
        assert body == (STATIC_DIR / name).read_bytes()
    status, ctype, _ = await _get(base, "/viewer/assets/style.css")
    assert (status, ctype) == (200, "text/css")
    for name, (rel, ctype_want) in VENDOR.items():
        status, ctype, body = await _get(base, f"/viewer/vendor/{name}")
        assert (status, ctype) == (200, ctype_want), name
        assert body == (MODULES_DIR / rel).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/viewer/assets/index.html",  # only .js, .css, .svg
        "/viewer/assets/nothing.js",
        "/viewer/assets/..%2Froutes.py",
        "/viewer/vendor/package.json",  # not on the list
        "/viewer/vendor/..%2F..%2Froutes.py",
        "/viewer/vendor/hls.js%2Fpackage.json",
        "/watch/live",
        "/watch/li ve/x",
    ],
)
async def test_nothing_else_is_served(server: Any, path: str) -> None:
    status, _, body = await _get(server.http_url, path)
    assert status == 404, (path, body[:200])


async def test_watch_info(server: Any) -> None:
    status, _, raw = await _get(server.http_url, "/api/watch/live/nobody")
    assert status == 200
    import json

    info = json.loads(raw)
    assert info["broadcast"] is None and info["room"] == "live/nobody"
    assert info["play"] == {
        "whep": "/whep/live/nobody",
        "hls": "/live/nobody.m3u8",
        "flv": "/live/nobody.flv",
    }
    assert info["anonymous_tokens"] is False
    b = await _broadcast(server)
    status, _, raw = await _get(server.http_url, f"/api/watch/{b['app']}/{b['stream']}")
    info = json.loads(raw)
    assert info["broadcast"]["id"] == b["id"]
    assert info["broadcast"]["title"] == "Tea"
    assert info["broadcast"]["state"] == "scheduled"
    assert set(info["broadcast"]) == {
        "id",
        "title",
        "description",
        "state",
        "scheduled_start",
        "started_at",
        "ended_at",
        "cover_url",
        "comments",
        "likes",
        "sharing",
    }  # public fields only: no push key, no ban reason


async def _post_token(server: Any, room: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{server.http_url}/api/watch/{room}/token", json=body) as r,
    ):
        return r.status, dict(await r.json())


async def test_anonymous_tokens_only_when_on(server_factory: Any) -> None:
    off = await server_factory("off")
    b = await _broadcast(off)
    status, err = await _post_token(off, f"{b['app']}/{b['stream']}")
    assert status == 404 and err["error"]["code"] == "anonymous_tokens_off"

    on = await server_factory("on", viewer={"anonymous_tokens": True, "anonymous_token_ttl": 600})
    b = await _broadcast(on)
    room = f"{b['app']}/{b['stream']}"
    status, t1 = await _post_token(on, room)
    assert status == 201, t1
    status, t2 = await _post_token(on, room, {"nick": "Ann"})
    assert status == 201
    v1 = verify_token(on.config.server.secret, t1["token"])
    v2 = verify_token(on.config.server.secret, t2["token"])
    assert v1.user_id == t1["user_id"] and v1.user_id.startswith("anon-")
    assert v1.user_id != v2.user_id  # every call is a new viewer
    assert v2.nick == "Ann" and v1.role.value == "viewer"
    assert v1.room == room and t1["broadcast_id"] == b["id"]
    assert v1.expires - 600 <= datetime.now(UTC).timestamp() <= v1.expires - 590
    with pytest.raises(TokenError):
        verify_token("another secret", t1["token"])
    # a stream without a broadcast gets none; bad bodies are refused with a reason
    assert (await _post_token(on, "live/nobody"))[0] == 404
    for bad in ({"nick": ""}, {"nick": "x" * 33}, {"nick": 5}, {"user_id": "admin"}):
        status, err = await _post_token(on, room, bad)
        assert status == 400, (bad, err)


async def test_files_gzip_once_etag_and_change(server: Any) -> None:
    """Compressed for clients that accept gzip (the same bytes once decompressed), plain for
    the others, 304 for an unchanged ETag; a changed file is served changed."""
    import gzip

    url = server.http_url + "/viewer/vendor/hls.min.js"
    want = (MODULES_DIR / VENDOR["hls.min.js"][0]).read_bytes()
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(url, headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
            zipped = await r.read()
            etag = r.headers["ETag"]
        assert gzip.decompress(zipped) == want and len(zipped) < len(want) / 2
        async with s.get(url, headers={"Accept-Encoding": "identity"}) as r:
            assert "Content-Encoding" not in r.headers and await r.read() == want
        async with s.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b""


async def test_file_cache_reads_a_changed_file_again(tmp_path: Any) -> None:
    from viewer.files import FileCache

    cache = FileCache()
    f = tmp_path / "a.js"
    f.write_text("one")
    first = await cache.get(f)
    assert first is not None and first.raw == b"one"
    assert await cache.get(f) is first  # unchanged: the same entry, not read again
    f.write_text("two, longer")
    second = await cache.get(f)
    assert second is not None and second.raw == b"two, longer" and second.etag != first.etag
    f.unlink()
    assert await cache.get(f) is None
