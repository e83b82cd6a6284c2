"""Drill 3 at CI size: SIGTERM of the origin during a live broadcast with viewers, its
recording and an edge: exit 0, no process left behind, viewers' connections end (the
edge's after its linger, with a proper end of the HTTP-FLV response), the broadcast is
not left live after the restart, and the replay is finalised with what was recorded."""

from __future__ import annotations

from pathlib import Path

from bench.faults import live_sigterm
from tests.mediautil import make_clip


async def test_sigterm_during_a_live_broadcast_ends_everything_cleanly(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.flv", 6.0, gop=30)
    figures = await live_sigterm.drill(tmp_path / "run", clip, live_seconds=4.0)
    assert not figures["failures"], figures
    assert figures["broadcast_after_restart"] != "live", figures
    assert figures["broadcast_at_end"] in ("ended", "replay_ready"), figures
    assert figures["mp4_seconds"] > 0 and figures["vod_endlist"], figures
