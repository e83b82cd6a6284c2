"""End to end with the real control plane: a broadcast is pushed, drops, ends; its replay
becomes the broadcast's replay_url (state replay_ready)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
import pytest

from tests.control.conftest import make_staff
from tests.mediautil import make_clip
from tests.replay.helpers import (
    LINGER,
    duration,
    get_json,
    probe,
    run_publisher,
    service_of,
    wait_done,
    wait_replay,
)


@pytest.mark.parametrize(
    ("linger", "grace"),
    [(LINGER, 1.5), (0.5, 3.0)],
    ids=["broadcast-ends-first", "hub-goes-first"],
)
async def test_broadcast_gets_its_replay(server_factory, clip_dir, linger, grace):
    clip = make_clip(clip_dir / "av4.flv", 4.0, gop=30)
    # either control ends the interrupted broadcast before the relay drops the hub, or the
    # hub goes first and the replay waits for the broadcast's end
    server = await server_factory(
        relay={"publisher_linger": linger},
        control={"interrupt_grace": grace, "sweep_interval": 0.2},
    )
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        b = await staff.create_broadcast(anchor_id=staff.ids["anchor"], scheduled_start=now)
        status, push = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
        assert status == 200, push
        await run_publisher(push["url"], clip)
        rep = await wait_replay(server, b["app"], b["stream"])
        await wait_done(rep)
        assert rep.broadcast_id == b["id"]
        deadline = time.monotonic() + 20
        while True:
            status, got = await staff.api.call("GET", f"/api/broadcasts/{b['id']}", staff.operator)
            if got["state"] == "replay_ready" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert got["state"] == "replay_ready", got
        assert got["replay_url"].endswith(f"/{rep.id}/index.m3u8")
        status, page = await get_json(f"{server.http_url}/api/replays?broadcast_id={b['id']}")
        assert status == 200 and page["items"][0]["mp4"]
        info = await asyncio.to_thread(probe, got["replay_url"])
        assert abs(duration(info) - 4.0) <= 1.0
        assert len(service_of(server).replays) == 1
