"""Issue 17 item 4: a banned broadcast's replay leaves every public URL at once (list, get,
VOD playlist, segments, MP4, cover, thumbnails, clips), also after a restart; and a replay
whose broadcast record is gone (deleted, the event missed) is refused on read."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import aiohttp
import pytest
import sqlalchemy as sa

from core.db import create_engine
from replay import ReplayState
from tests.conftest import make_config, start_server
from tests.control.conftest import make_staff
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.replay.helpers import get_json, replay_dir, service_of, wait_done, wait_replay


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        await r.read()
        return r.status


async def _public_urls(base: str, bid: int, rid: str) -> list[str]:
    status, view = await get_json(f"{base}/api/replays/{rid}")
    assert status == 200, view
    status, index = await get_json(view["hls"])
    assert status == 200 and "#EXTINF" in index, index
    segment = next(line for line in index.splitlines() if line and not line.startswith("#"))
    urls = [
        f"{base}/api/replays/{rid}",
        view["hls"],
        view["hls"].rsplit("/", 1)[0] + "/" + segment,
        view["mp4"],
        view["cover"],
        view["thumbnails"],
        *(c["url"] for c in view["clips"]),
    ]
    assert all(urls) and view["clips"], view
    return urls


async def _listed(base: str, bid: int, rid: str) -> dict[str, bool]:
    out = {}
    for path in ("/api/replays", f"/api/replays?broadcast_id={bid}", "/api/replays/clips"):
        status, page = await get_json(base + path)
        assert status == 200, page
        out[path] = any(rid in (i.get("id"), i.get("replay_id")) for i in page["items"])
    return out


@pytest.mark.parametrize("missed", [False, True], ids=["ban-event", "ban-missed-by-this-node"])
async def test_ban_withholds_every_public_url_of_the_replay(tmp_path, clip_dir, missed):
    """end -> replay_ready -> ban: every public URL refuses at once and after a restart. With
    ``missed``, the ban is written to control's records while this node is down (it never
    sees ``broadcast.banned``): the first reads after the restart refuse all the same."""
    clip = make_clip(clip_dir / "av5.flv", 5.0, gop=30)
    cfg = make_config(
        tmp_path / "node",
        relay={"publisher_linger": 1.0},
        control={"interrupt_grace": 1.0, "sweep_interval": 0.2},
        replay={"thumbnail_interval": 1.0},
    )
    server = await start_server(cfg)
    try:
        async with aiohttp.ClientSession() as session:
            staff = await make_staff(server, session)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            b = await staff.create_broadcast(anchor_id=staff.ids["anchor"], scheduled_start=now)
            bid = b["id"]
            _, push = await staff.api.call("GET", f"/api/broadcasts/{bid}/push", staff.anchor)
            pub = await start_publisher(push["url"], clip)
            try:
                rep = await wait_replay(server, b["app"], b["stream"])
                rec = service_of(server).recordings[f"{b['app']}/{b['stream']}"]
                await wait_for(lambda: rec.segment_count >= 1, 20)
                card = {"room": f"{b['app']}/{b['stream']}", "card_id": 1, "product_id": 5}
                await server.runtime.bus.publish("card.pushed", {**card, "ts": time.time()})
                _, err = await asyncio.wait_for(pub.communicate(), 60)
                assert pub.returncode == 0, err.decode()
            finally:
                await stop(pub)
            await wait_done(rep)
            assert rep.state is ReplayState.READY, rep.error

            async def state() -> str:
                _, got = await staff.api.call("GET", f"/api/broadcasts/{bid}", staff.operator)
                return str(got["state"])

            deadline = time.monotonic() + 20
            while await state() != "replay_ready" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await state() == "replay_ready"
            base = server.http_url
            urls = await _public_urls(base, bid, rep.id)
            for url in urls:
                assert await _status(session, url) == 200, url
            assert all((await _listed(base, bid, rep.id)).values())
            database_url = server.runtime.database_url

            if not missed:
                status, body = await staff.api.call(
                    "POST", f"/api/broadcasts/{bid}/ban", staff.operator, json={"reason": "t"}
                )
                assert status == 200, body
                # at once: the first requests after the ban was answered are refused
                for url in urls:
                    assert await _status(session, url) == 404, url
                assert not any((await _listed(base, bid, rep.id)).values())
                await wait_for(lambda: rep.withheld == "banned", 10)
                manifest = replay_dir(server, rep) / "replay.json"
                await wait_for(lambda: json.loads(manifest.read_text())["withheld"] == "banned", 10)
                assert (replay_dir(server, rep) / "replay.mp4").exists()  # kept for review
    finally:
        await asyncio.wait_for(server.runner.cleanup(), 30)

    if missed:  # banned elsewhere while this node was down: only the record says so
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE control_broadcasts SET state = 'banned' WHERE id = :id"),
                    {"id": bid},
                )
        finally:
            await engine.dispose()

    server = await start_server(cfg)  # after a restart, from the records
    try:
        assert service_of(server).replays[rep.id].withheld == (None if missed else "banned")
        async with aiohttp.ClientSession() as session:
            for url in urls:
                url = url.replace(base, server.http_url)
                assert await _status(session, url) == 404, url
            assert not any((await _listed(server.http_url, bid, rep.id)).values())
        assert service_of(server).replays[rep.id].withheld == "banned"
    finally:
        await asyncio.wait_for(server.runner.cleanup(), 30)
