"""A live stream without a broadcast, kicked and banned by its name from one node while
its publisher is on another (shared Redis): the kick cuts it, the ban refuses its publish
on every node with the ban's reason (RTMP and WHIP), lifting it lets it back; a timed ban
expires by itself."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from core.redis import EmbeddedValkey
from ingest import auth as ingest_auth
from tests.control.conftest import make_staff
from tests.control.publisher import start_ffmpeg, stop


@pytest.fixture
async def valkey(tmp_path):
    vk = EmbeddedValkey(tmp_path / "shared-redis", persist=False)
    await vk.start()
    yield vk
    await vk.stop()


async def wait_until(cond, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _live(session: aiohttp.ClientSession, server, token: str, name: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{server.http_url}/api/streams", headers=headers) as r:
        body = await r.json()
    return any(s["name"] == name and s["live"] for s in body["streams"])


async def _whip(session: aiohttp.ClientSession, server, name: str) -> tuple[int, dict]:
    token = ingest_auth.push_query(
        server.config.server.secret, "live", name, int(time.time()) + 600
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with session.post(
        f"{server.http_url}/whip/live/{name}", data=b"v=0\r\n", headers=headers
    ) as r:
        return r.status, await r.json(content_type=None)


async def test_kick_and_ban_a_stream_without_a_broadcast(valkey, server_factory) -> None:
    n1 = await server_factory("n1", redis={"url": valkey.url})
    n2 = await server_factory("n2", redis={"url": valkey.url})
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(n1, session)
        op = staff.operator
        tok2 = (await make_staff(n2, session)).operator
        proc = await start_ffmpeg(n2.push_url("nobroadcast"))
        try:
            await wait_until(lambda: _live(session, n2, tok2, "nobroadcast"), 20, "live on n2")
            # kick from n1: the publisher on n2 is cut
            status, body = await staff.api.call(
                "POST", "/api/streams/live/nobroadcast/kick", op, json={"reason": "test kick"}
            )
            assert status == 202 and body["reason"] == "test kick", body
            await asyncio.wait_for(proc.wait(), 15)
        finally:
            await stop(proc)
        # only operators
        status, _ = await staff.api.call("POST", "/api/streams/live/nobroadcast/kick", staff.anchor)
        assert status == 403

        # ban for an hour from n1: live publisher cut, publish refused on n2 with the reason
        proc = await start_ffmpeg(n2.push_url("nobroadcast"))
        try:
            await wait_until(lambda: _live(session, n2, tok2, "nobroadcast"), 20, "live again")
            status, ban = await staff.api.call(
                "POST",
                "/api/streams/live/nobroadcast/ban",
                op,
                json={"reason": "spam", "duration_s": 3600},
            )
            assert status == 201, ban
            assert ban["reason"] == "spam" and ban["by"] == "operator1" and ban["until"]
            await asyncio.wait_for(proc.wait(), 15)
        finally:
            await stop(proc)
        again = await start_ffmpeg(n2.push_url("nobroadcast"), seconds=10)
        try:
            assert await asyncio.wait_for(again.wait(), 15) != 0
            stderr = (await again.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
        finally:
            await stop(again)
        assert "banned" in stderr and "spam" in stderr, stderr
        status, err = await _whip(session, n2, "nobroadcast")
        assert status == 403 and err["error"]["code"] == "banned", err
        assert "spam" in err["error"]["message"] and "until" in err["error"]["message"]
        # another name is not affected
        status, err = await _whip(session, n2, "othername")
        assert err.get("error", {}).get("code") != "banned", err

        status, listed = await staff.api.call("GET", "/api/stream-bans", op)
        assert [(b["app"], b["stream"]) for b in listed["items"]] == [("live", "nobroadcast")]
        status, one = await staff.api.call("GET", "/api/streams/live/nobroadcast/ban", op)
        assert status == 200 and one["reason"] == "spam"
        for bad in ({"duration_s": 0}, {"duration_s": "1h"}, {"until": 5}):
            status, err = await staff.api.call("POST", "/api/streams/live/x/ban", op, json=bad)
            assert status == 400, (bad, err)

        # lifted: the name publishes again (WHIP gets past the ban to the SDP check)
        status, _ = await staff.api.call("DELETE", "/api/streams/live/nobroadcast/ban", op)
        assert status == 204
        status, _ = await staff.api.call("DELETE", "/api/streams/live/nobroadcast/ban", op)
        assert status == 404
        status, err = await _whip(session, n2, "nobroadcast")
        assert err.get("error", {}).get("code") != "banned", err

        # a timed ban ends by itself (Redis expiry), with no call to lift it
        status, ban = await staff.api.call(
            "POST", "/api/streams/live/brief/ban", op, json={"duration_s": 1}
        )
        assert status == 201 and ban["until"], ban
        status, err = await _whip(session, n2, "brief")
        assert status == 403 and err["error"]["code"] == "banned", err

        async def unbanned() -> bool:
            return (await _whip(session, n2, "brief"))[1].get("error", {}).get("code") != "banned"

        await wait_until(unbanned, 10, "timed ban expired")
        # the list forgets it too (its index entry goes with the expired key)
        status, listed = await staff.api.call("GET", "/api/stream-bans", op)
        assert status == 200 and listed["items"] == [], listed
        assert not await n1.runtime.redis.hexists(ingest_auth.STREAM_BAN_INDEX, "live/brief")
