"""Issue 17 item 11: recording disk is bounded. Below the free-space floor every recording
pauses (logged, an alert metric, the replay says why) and resumes in a new part when space
is back; the total-size cap deletes the oldest finished replays first, never a live one."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import aiohttp

from replay import ReplayState
from replay.storage import disk_space
from tests.mediautil import make_clip, operator_token, start_publisher, stop, wait_for
from tests.replay.helpers import get_json, replay_dir, service_of, wait_done, wait_replay

PAUSED = 'berrylive_replay_recording_paused{reason="disk"}'


async def _metric(base: str, token: str, name: str) -> float:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_disk_space_reads_the_filesystem_of_a_directory(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free, size = disk_space(tmp_path / "not" / "made" / "yet")
    assert size == st.f_blocks * st.f_frsize and 0 < free <= size


async def test_floor_pauses_recording_and_space_coming_back_resumes_it(
    server_factory, clip_dir, tmp_path
):
    clip = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    # the floor (from config) is 1 GiB above what is free now: recording must not start
    free, _size = disk_space(tmp_path)
    server = await server_factory(
        relay={"publisher_linger": 1.0},
        replay={
            "min_free_bytes": free + 1024**3,
            "min_free_percent": 0.0,
            "disk_check_interval": 0.2,
        },
    )
    svc = service_of(server)
    base = server.http_url
    token = await operator_token(server)
    assert svc.recording_paused == "disk"
    assert await _metric(base, token, PAUSED) == 1
    pub = await start_publisher(server.push_url("disk"), clip, loop=True)
    try:
        rep = await wait_replay(server, "live", "disk")
        rec = svc.recordings["live/disk"]
        status, view = await get_json(f"{base}/api/replays/{rep.id}")
        assert status == 200 and view["state"] == "recording" and view["paused"] == "disk"
        # the publisher is live and sends keyframes; nothing is written meanwhile
        await wait_for(lambda: rec.hub.live and rec.hub.gop_valid and bool(rec.hub.gop), 10)
        await wait_for(lambda: rec.hub.gop[0].dts > 1000, 10)  # a second keyframe since
        assert rec.current is None and rep.parts == []

        # space comes back (the floor is lowered): recording resumes by itself
        svc.config = dataclasses.replace(svc.config, min_free_bytes=1)
        await wait_for(lambda: rec.segment_count >= 2, 30)
        assert svc.recording_paused is None and rec.paused is None
        assert [p.reason for p in rep.parts] == ["start"]  # nothing written while paused
        assert await _metric(base, token, PAUSED) == 0
        status, view = await get_json(f"{base}/api/replays/{rep.id}")
        assert view["paused"] is None

        # the disk fills again mid-recording: the part ends cleanly, nothing more is written
        svc.config = dataclasses.replace(svc.config, min_free_bytes=free + 1024**3)
        await wait_for(lambda: rec.paused == "disk" and rec.current is None, 10)
        assert await _metric(base, token, PAUSED) == 1
        kept = rep.parts[0].duration
        assert kept > 0 and rep.parts[0].end_reason == "paused: disk"

        svc.config = dataclasses.replace(svc.config, min_free_bytes=1)
        await wait_for(lambda: len(rep.parts) == 2 and rec.playlists.get(2) is not None, 30)
        await wait_for(lambda: bool(rec.playlists[2].segments), 30)
        assert rep.parts[1].reason == "unpaused"
    finally:
        await stop(pub)
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert rep.parts[0].duration == kept and rep.parts[1].duration > 0
    assert (replay_dir(server, rep) / "replay.mp4").exists()


async def test_size_cap_deletes_oldest_finished_replays_never_a_live_one(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    server = await server_factory(relay={"publisher_linger": 0.5})
    svc = service_of(server)
    done = []
    for name in ("old", "new"):
        pub = await start_publisher(server.push_url(name), clip)
        try:
            rep = await wait_replay(server, "live", name)
            _, err = await asyncio.wait_for(pub.communicate(), 60)
            assert pub.returncode == 0, err.decode()
        finally:
            await stop(pub)
        await wait_done(rep)
        assert rep.state is ReplayState.READY and rep.size > 0, rep.error
        done.append(rep)
    old, new = done
    live_pub = await start_publisher(server.push_url("live"), clip, loop=True)
    try:
        live = await wait_replay(server, "live", "live")
        rec = svc.recordings["live/live"]
        await wait_for(lambda: rec.segment_count >= 1, 20)
        # room for the newest finished replay only (and none for the live one): the oldest
        # goes, then the newer one, the live one never
        svc.config = dataclasses.replace(svc.config, max_age_days=0, max_total_bytes=new.size)
        deleted = await svc.apply_retention()
        assert deleted == [old.id, new.id]
        assert live.id in svc.replays and replay_dir(server, live).exists()
        assert not replay_dir(server, old).exists() and not replay_dir(server, new).exists()
    finally:
        await stop(live_pub)
