"""Drill 5's defect, pinned: across a publisher takeover (an edge's pull moving to another
origin, an anchor republishing) every track's DTS strictly increases, and the new
publisher's first picture is presented after every picture already sent.

Found by bench/faults/origin_failover.py: an ffmpeg decoding viewer on the edge reported
``non monotonically increasing dts`` at the splice. The hub continued the timeline
``TAKEOVER_GAP_MS`` after the last *decode* time; with B-frames the last pictures sent are
*presented* up to a few frames later (composition offset), so the new keyframe's
presentation time could land before them. And when the new publisher's first frame was
audio ahead of its video, the video landed behind the last video frame and was clamped
to an equal DTS.
"""

from __future__ import annotations

from dataclasses import replace

from media import flv
from media.frame import Kind
from relay.config import RelayConfig
from relay.formats import HTTP_FLV_10
from relay.hub import PublisherInfo, StreamRegistry, Viewer, ViewerInfo
from tests.relay.test_hub import AAC_HDR, AVC_HDR, MemTransport, aac, tags


def video(keyframe: bool, cts: int) -> bytes:
    return bytes([0x17 if keyframe else 0x27, 1]) + cts.to_bytes(3, "big", signed=True) + bytes(50)


def registry() -> StreamRegistry:
    return StreamRegistry(replace(RelayConfig(), write_coalesce_ms=0), linger_seconds=0.05)


def watch(reg: StreamRegistry) -> MemTransport:
    hub = reg.get("live", "s")
    assert hub is not None
    t = MemTransport()
    hub.add_viewer(Viewer(t, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    return t


def check(t: MemTransport) -> None:
    """Per track: frame DTS strictly increasing; video pictures: every keyframe presented
    after everything presented before it."""
    last: dict[int, int] = {}
    shown = -1
    for tag in tags(t):
        info = flv.parse_video_header(tag.body) if tag.tag_type == 9 else None
        if (info is not None and info.sequence_header) or (tag.tag_type == 8 and tag.body[1] == 0):
            continue
        prev = last.get(tag.tag_type, -1)
        assert tag.timestamp > prev, (tag.tag_type, prev, tag.timestamp)
        last[tag.tag_type] = tag.timestamp
        if info is not None:
            pts = tag.timestamp + info.cts
            if info.keyframe:
                assert pts > shown, f"keyframe presented at {pts}, after {shown} was shown"
            shown = max(shown, pts)


def publish_b_frames(reg: StreamRegistry, name: str, frames: int) -> None:
    """An anchor with B-frames (I P B B ...: the P is presented 4 frames on) cut right after
    a P frame."""
    a = reg.publish("live", "s", PublisherInfo(name))
    a.push(Kind.VIDEO, 0, AVC_HDR)
    a.push(Kind.AUDIO, 0, AAC_HDR)
    for i in range(frames):
        cts = 67 if i == 0 else (133 if i % 3 == 1 else 33)
        a.push(Kind.VIDEO, i * 33, video(i == 0, cts))
        a.push(Kind.AUDIO, i * 33 + 5, aac())


async def test_the_new_keyframe_is_presented_after_the_pictures_already_sent() -> None:
    reg = registry()
    publish_b_frames(reg, "a", 2)  # last: a P at dts 33 presented at 166
    t = watch(reg)
    publish_b_frames(reg, "b", 6)  # the anchor on the other origin
    check(t)


async def test_video_behind_audio_in_the_new_publisher_keeps_dts_strictly_increasing() -> None:
    reg = registry()
    publish_b_frames(reg, "a", 10)
    t = watch(reg)
    b = reg.publish("live", "s", PublisherInfo("b"))
    b.push(Kind.AUDIO, 1000, aac())  # the new upstream's audio runs 300 ms ahead
    for i in range(6):
        b.push(Kind.VIDEO, 700 + i * 33, video(i == 0, 0))
        b.push(Kind.AUDIO, 1033 + i * 33, aac())
    check(t)
