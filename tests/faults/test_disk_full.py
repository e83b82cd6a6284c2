"""Drill 4 at CI size: the data dir on a small filesystem of its own (a tmpfs when the
drill may mount one, else the host's with a floor just under its free space) fills up
during a live broadcast with a flash sale: the recording pauses at the floor, buys and
danmaku go on, the segments recorded stay, recording resumes when space is back, and the
replay is finalised with both parts."""

from __future__ import annotations

from pathlib import Path

from bench.faults import disk_full
from tests.mediautil import make_clip


async def test_a_full_recording_disk_stops_recording_not_orders(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.flv", 6.0, gop=30)
    figures = await disk_full.drill(tmp_path / "run", clip, fs_mib=192, floor_mib=48)
    assert not figures["failures"], figures
    assert figures["buys_ok_while_paused"] == figures["buys_while_paused"] > 0, figures
    assert figures["replay_seconds"] >= figures["seconds_before_pause"], figures
