"""The lifecycle through real publish events: ffmpeg pushes with the broadcast's URL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from tests.control.publisher import start_ffmpeg, stop
from tests.control.test_lifecycle import wait_state


def now_iso(offset: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).isoformat()


async def push_url(staff, bid: int) -> str:
    status, p = await staff.api.call("GET", f"/api/broadcasts/{bid}/push", staff.anchor)
    assert status == 200, p
    return p["url"]


async def test_ffmpeg_push_goes_live_then_interrupted_then_ended(staff) -> None:
    b = await staff.create_broadcast(
        anchor_id=staff.ids["anchor"], scheduled_start=now_iso(60), scheduled_end=now_iso(3600)
    )
    proc = await start_ffmpeg(await push_url(staff, b["id"]))
    try:
        await wait_state(staff, b["id"], "live", timeout=20)
        # the dashboard sees the relay's figures
        deadline = time.monotonic() + 15
        while True:
            status, stats = await staff.api.call(
                "GET", f"/api/broadcasts/{b['id']}/stats", staff.operator
            )
            assert status == 200
            if stats["live"] and (stats["bitrate_in"] or 0) > 0:
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.2)
        assert stats["video"] is not None
        status, metrics = await staff.api.call("GET", "/metrics")
        assert status == 200
        assert b"berrylive_streams 1.0" in metrics
        assert b'berrylive_broadcasts{state="live"} 1.0' in metrics
    finally:
        await stop(proc)
    await wait_state(staff, b["id"], "interrupted", timeout=15)
    ended = await wait_state(staff, b["id"], "ended", timeout=15)
    assert ended["ended_at"]


async def test_revoked_key_is_cut_and_old_urls_refused(staff) -> None:
    b = await staff.create_broadcast(
        anchor_id=staff.ids["anchor"], scheduled_start=now_iso(60), scheduled_end=now_iso(3600)
    )
    old_url = await push_url(staff, b["id"])
    proc = await start_ffmpeg(old_url)
    try:
        await wait_state(staff, b["id"], "live", timeout=20)
        status, _ = await staff.api.call(
            "POST", f"/api/broadcasts/{b['id']}/push/revoke", staff.operator
        )
        assert status == 200
        # ingest cuts the publisher at once: ffmpeg ends, the broadcast is interrupted
        await asyncio.wait_for(proc.wait(), 10)
        await wait_state(staff, b["id"], "interrupted", timeout=10)
    finally:
        await stop(proc)
    status, body = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
    assert status == 409 and "revoked" in body["error"]["message"]  # revoked: no URL until rotated
    # the old URL is refused
    again = await start_ffmpeg(old_url, seconds=10)
    try:
        rc = await asyncio.wait_for(again.wait(), 15)
        assert rc != 0
    finally:
        await stop(again)
    # (the grace is 1.5 s in tests: by now it may have ended)
    status, b_now = await staff.api.call("GET", f"/api/broadcasts/{b['id']}", staff.operator)
    assert b_now["state"] in ("interrupted", "ended")
