"""Drill 5 at CI size: the origin under an edge is SIGKILLed and the anchor republishes to
a second origin; the edge's viewers (raw HTTP-FLV, ffmpeg remuxing, ffmpeg decoding) keep
their connections, get DTS strictly increasing per track across the splice, and ffmpeg
reports no timestamp error (it did, 2 rounds in 3, before relay/hub.py's fix; the
deterministic check of that fix is tests/faults/test_splice.py)."""

from __future__ import annotations

from pathlib import Path

from bench.faults import origin_failover
from tests.mediautil import make_clip


async def test_edge_viewers_survive_the_origin_killed_and_the_anchor_moving(
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "clip.flv", 6.0, gop=30)
    figures = await origin_failover.drill(tmp_path / "run", clip, viewers=2, after=3.0)
    assert not figures["failures"], figures
    assert all(r is not None for r in figures["resumed_after_republish_s"]), figures
