"""Replay REST API (roles, errors, delete), recovery after a restart, retention."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from replay import Replay, ReplayState
from tests.conftest import make_config, start_server
from tests.mediautil import make_clip, operator_token, start_publisher, stop, wait_for
from tests.replay.helpers import (
    LINGER,
    duration,
    get_json,
    probe,
    replay_dir,
    run_publisher,
    service_of,
    wait_done,
    wait_replay,
)


async def test_api_roles_errors_and_delete(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    server = await server_factory(relay={"publisher_linger": LINGER})
    base = server.http_url
    pub = await start_publisher(server.push_url("api"), clip, loop=True)
    try:
        rep = await wait_replay(server, "live", "api")
        rec = service_of(server).recordings["live/api"]
        await wait_for(lambda: rec.segment_count >= 1, 15)
        token = await operator_token(server)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s:
            async with s.delete(f"{base}/api/replays/{rep.id}") as r:
                assert r.status == 401
            async with s.delete(f"{base}/api/replays/{rep.id}", headers=auth) as r:
                assert r.status == 409 and (await r.json())["error"]["code"] == "replay_busy"
    finally:
        await stop(pub)
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    status, page = await get_json(f"{base}/api/replays?app=live&stream=api")  # public
    assert status == 200 and page["total"] == 1 and page["items"][0]["id"] == rep.id
    status, page = await get_json(f"{base}/api/replays?state=recording")
    assert status == 200 and page["total"] == 0
    for bad in ("limit=0", "limit=x", "offset=-1", "state=nope", "broadcast_id=abc"):
        status, body = await get_json(f"{base}/api/replays?{bad}")
        assert status == 400 and body["error"]["code"] == "invalid_query", bad
    status, body = await get_json(f"{base}/api/replays/r0000000000")
    assert status == 404 and body["error"]["code"] == "replay_not_found"
    # files are only served for their own app/stream, and only known names
    for path in (f"/live/other/{rep.id}/index.m3u8", f"/live/api/{rep.id}/replay.json",
                 f"/live/api/{rep.id}/p1/../replay.json", "/live/nothing.m3u8"):  # fmt: skip
        async with aiohttp.ClientSession() as s, s.get(base + path) as r:
            assert r.status == 404, path
    directory = replay_dir(server, rep)
    assert (directory / "replay.mp4").exists()
    async with aiohttp.ClientSession() as s:
        async with s.delete(f"{base}/api/replays/{rep.id}", headers=auth) as r:
            assert r.status == 204
        async with s.get(f"{base}/api/replays/{rep.id}") as r:
            assert r.status == 404
    assert not directory.exists()


async def test_replay_left_recording_is_finalised_on_next_start(tmp_path, clip_dir):
    clip = make_clip(clip_dir / "av12.flv", 12.0, gop=30)
    cfg = make_config(tmp_path / "node", relay={"publisher_linger": 30.0})
    server = await start_server(cfg)
    pub = await start_publisher(server.push_url("crash"), clip)
    try:
        rep = await wait_replay(server, "live", "crash")
        rec = service_of(server).recordings["live/crash"]
        await wait_for(lambda: rec.segment_count >= 2, 20)
        await asyncio.wait_for(server.runner.cleanup(), 30)  # the server goes down mid-show
    finally:
        await stop(pub)
    assert rep.state is ReplayState.RECORDING  # nothing finalised it
    recorded = rep.parts[0].duration
    assert recorded >= 2.0
    server = await start_server(cfg)
    try:
        again = service_of(server).replays[rep.id]
        await wait_done(again)
        assert again.state is ReplayState.READY, again.error
        _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
        info = await asyncio.to_thread(probe, view["mp4"])
        assert duration(info) >= recorded - 0.1
    finally:
        await asyncio.wait_for(server.runner.cleanup(), 30)


async def test_retention_by_age_then_by_size(server_factory):
    server = await server_factory()
    svc = service_of(server)
    now = time.time()
    made = []
    for i, (age_days, size) in enumerate([(40, 100), (10, 300), (5, 300), (1, 300)]):
        rep = Replay(id=Replay.new_id(), app="live", stream=f"s{i}", state=ReplayState.READY)
        rep.created = rep.ended = now - age_days * 86400
        rep.size = size
        svc.replays[rep.id] = rep
        await svc.save(rep)
        made.append(rep)
    live = Replay(id=Replay.new_id(), app="live", stream="live", state=ReplayState.RECORDING)
    live.created, live.size = now - 50 * 86400, 10_000
    svc.replays[live.id] = live
    svc.config = type(svc.config)(max_age_days=30, max_total_bytes=10_700)
    deleted = await svc.apply_retention(now)
    # 40 days old goes by age; then the oldest finished (10 days) goes for size;
    # a recording is never deleted
    assert deleted == [made[0].id, made[1].id]
    assert set(svc.replays) == {made[2].id, made[3].id, live.id}
    assert not replay_dir(server, made[0]).exists() and replay_dir(server, made[2]).exists()


async def test_broadcast_events_map_streams_and_can_switch_replay_off(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    server = await server_factory(relay={"publisher_linger": LINGER})
    bus = server.runtime.bus
    ready: list[dict] = []
    bus.subscribe("replay.ready", lambda e: ready.append(e.data))
    b7 = {"id": 7, "broadcast_id": 7, "app": "live", "stream": "b7", "settings": {"replay": True}}
    b8 = {"id": 8, "broadcast_id": 8, "app": "live", "stream": "b8", "settings": {"replay": False}}
    await bus.publish("broadcast.live", b7)
    await bus.publish("broadcast.created", b8)
    await bus.drain()
    await run_publisher(server.push_url("b7"), clip)
    await run_publisher(server.push_url("b8"), clip)
    rep = await wait_replay(server, "live", "b7")
    await wait_for(lambda: service_of(server).recordings["live/b7"].hub_gone, 10)
    assert rep.state is ReplayState.RECORDING  # the broadcast is still live
    await bus.publish("broadcast.ended", {**b7, "state": "ended"})
    await wait_done(rep)
    assert rep.broadcast_id == 7
    await wait_for(lambda: bool(ready), 5)
    assert ready[0]["broadcast_id"] == 7 and ready[0]["replay_id"] == rep.id
    # control has no broadcast 7 (these events were hand-made): the replay's broadcast
    # record is missing, so it is treated as deleted and withheld from public URLs
    status, page = await get_json(f"{server.http_url}/api/replays?broadcast_id=7")
    assert status == 200 and page["items"] == [] and rep.withheld == "deleted"
    assert not any(r.stream == "b8" for r in service_of(server).replays.values())
