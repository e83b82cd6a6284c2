"""Hub logic with in-memory transports: timelines, GOP bounds, slow viewers, headers."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from media import flv
from media.frame import Frame, Kind
from media.rtmp.chunk import ChunkReader
from relay.config import RelayConfig
from relay.formats import HTTP_FLV, HTTP_FLV_10, HttpFlv, RtmpPlay, http_chunk
from relay.hub import Batch, PublisherInfo, StreamRegistry, Viewer, ViewerInfo
from tests.mediautil import wait_for

AVC_HDR = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef"
AVC_HDR2 = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x28\xff\xe1\x00\x04wxyz\x01\x00\x02gh"
AAC_HDR = b"\xaf\x00\x12\x10"


def key(n: int = 100) -> bytes:
    return b"\x17\x01\x00\x00\x00" + bytes(n)


def inter(n: int = 100) -> bytes:
    return b"\x27\x01\x00\x00\x00" + bytes(n)


def aac(n: int = 20) -> bytes:
    return b"\xaf\x01" + bytes(n)


class MemTransport:
    """A write transport that stores what it gets; ``stalled`` keeps it in the buffer."""

    def __init__(self, stalled: bool = False) -> None:
        self.stalled = stalled
        self.received = bytearray()
        self.buffered = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.stalled:
            self.buffered += len(data)
        else:
            self.received += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def tags(t: MemTransport) -> list[flv.FlvTag]:
    data = bytes(t.received)
    if not data.startswith(b"FLV"):  # the header went out while the transport was stalled
        data = flv.file_header(True, True) + data
    d = flv.FlvDemuxer()
    return [x for x in d.feed(data) if isinstance(x, flv.FlvTag)]


def registry(**kw: int) -> StreamRegistry:
    kw.setdefault("write_coalesce_ms", 0)  # synchronous delivery unless a test asks
    kw.setdefault("write_coalesce_min_viewers", 0)  # a test that asks for a tick gets it
    return StreamRegistry(replace(RelayConfig(), **kw), linger_seconds=0.05)


async def test_timestamps_unwrap_across_32_bits() -> None:
    reg = registry()
    pub = reg.publish("live", "w", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0xFFFFFF00, AVC_HDR)
    pub.push(Kind.VIDEO, 0xFFFFFF00, key())
    pub.push(Kind.VIDEO, 0xFFFFFFF0, inter())
    pub.push(Kind.VIDEO, 0x00000010, inter())  # wrapped
    hub = reg.get("live", "w")
    assert [f.dts for f in hub.gop] == [0, 0xF0, 0x110]


async def test_takeover_continues_the_timeline_and_resumes_at_keyframe() -> None:
    reg = registry()
    a = reg.publish("live", "t", PublisherInfo("a"))
    a.push(Kind.VIDEO, 0, AVC_HDR)
    for i in range(10):
        a.push(Kind.VIDEO, 5000 + i * 33, key() if i == 0 else inter())
    hub = reg.get("live", "t")
    t = MemTransport()
    v = Viewer(t, HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(v, hub.flv_prelude(HTTP_FLV_10))
    kicked: list[str] = []
    b = reg.publish("live", "t", PublisherInfo("b"), on_kick=kicked.append)
    assert not a.active and hub.publisher is b
    b.push(Kind.VIDEO, 0, AVC_HDR)  # same header: not repeated to the viewer
    b.push(Kind.VIDEO, 10, inter())  # no keyframe yet: held back
    b.push(Kind.VIDEO, 33, key())
    b.push(Kind.VIDEO, 66, inter())
    video = [(x.timestamp, flv.parse_video_header(x.body)) for x in tags(t) if x.tag_type == 9]
    headers = [i for _, i in video if i.sequence_header]
    assert len(headers) == 1
    ts = [ts for ts, _ in video]
    assert ts == sorted(ts)
    after = [(ts, i) for ts, i in video if ts > 5000 + 9 * 33]
    assert after[0][1].keyframe


@pytest.mark.parametrize("coalesce", [0, 10])
async def test_rtmp_viewers_get_frames_chunked_at_their_own_chunk_size(coalesce: int) -> None:
    """A forward (60 000-byte chunks) and a player (65 536) on one stream: frames larger
    than a chunk reach each chunked as it announced, whichever of them is served first."""
    reg = registry(write_coalesce_ms=coalesce)
    p = reg.publish("live", "c", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "c")
    transports: dict[int, MemTransport] = {}
    for cs in (60_000, 65_536, 60_000):
        t = MemTransport()
        hub.add_viewer(Viewer(t, RtmpPlay(cs), ViewerInfo("rtmp")), hub.rtmp_prelude(cs))
        t.received.clear()
        transports.setdefault(cs, t)
    sent = [key(150_000), inter(61_000), inter(100), key(70_000)]
    for i, payload in enumerate(sent):
        p.push(Kind.VIDEO, 33 * (i + 1), payload)
    total = sum(len(x) for x in sent)
    await wait_for(lambda: all(len(t.received) > total for t in transports.values()))
    for cs, t in transports.items():
        reader = ChunkReader()
        reader.chunk_size = cs
        got = [m.payload for m in reader.feed(bytes(t.received))]
        assert got == sent, f"chunk size {cs}"
    reg.close()


def test_a_batch_is_encoded_once_per_format_and_formats_are_one_object_per_value() -> None:
    big = Frame(Kind.VIDEO, 0, key(70_000))
    batch = Batch([big, Frame(Kind.VIDEO, 33, inter())], 0)
    player = batch.encoded(RtmpPlay(65_536))
    assert RtmpPlay(65_536) is RtmpPlay(65_536)  # each RTMP connection builds its own
    assert batch.encoded(RtmpPlay(65_536)) is player  # shared by every player at that size
    forward = batch.encoded(RtmpPlay(60_000))
    assert forward != player
    assert forward == big.rtmp_message(60_000) + batch.frames[1].rtmp_message(60_000)
    assert player == big.rtmp_message(65_536) + batch.frames[1].rtmp_message(65_536)
    assert HttpFlv() is HTTP_FLV and HttpFlv(chunked=False) is HTTP_FLV_10
    assert batch.encoded(HTTP_FLV) == http_chunk(batch.encoded(HTTP_FLV_10))


async def test_changed_sequence_header_is_sent_before_next_keyframe() -> None:
    reg = registry()
    p = reg.publish("live", "h", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "h")
    t = MemTransport()
    hub.add_viewer(Viewer(t, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    p.push(Kind.VIDEO, 33, inter())
    p.push(Kind.VIDEO, 66, AVC_HDR2)
    p.push(Kind.VIDEO, 66, key())
    bodies = [x.body for x in tags(t) if x.tag_type == 9]
    assert bodies.index(AVC_HDR2) == len(bodies) - 2


async def test_gop_cache_is_bounded_without_keyframes() -> None:
    reg = registry(gop_max_frames=50, gop_max_bytes=10_000)
    p = reg.publish("live", "g", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "g")
    for i in range(1, 2000):
        p.push(Kind.VIDEO, i * 33, inter(200))
        p.push(Kind.AUDIO, i * 33, aac())
        assert len(hub.gop) <= 51 and hub.gop_bytes <= 10_300
    assert not hub.gop_valid
    # a viewer joining now waits for a keyframe instead of getting undecodable frames
    t = MemTransport()
    v = Viewer(t, HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(v, hub.flv_prelude(HTTP_FLV_10))
    n = len(tags(t))
    p.push(Kind.VIDEO, 70000, inter())
    assert len(tags(t)) == n
    p.push(Kind.VIDEO, 70033, key())
    assert flv.parse_video_header(tags(t)[-1].body).keyframe


async def test_slow_viewer_skips_to_keyframe_then_is_dropped() -> None:
    reg = registry(viewer_max_backlog_bytes=1000, viewer_drop_after_skips=3)
    p = reg.publish("live", "s", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "s")
    slow_t = MemTransport(stalled=True)
    slow = Viewer(slow_t, HTTP_FLV_10, ViewerInfo("flv", "slow"))
    fast_t = MemTransport()
    fast = Viewer(fast_t, HTTP_FLV_10, ViewerInfo("flv", "fast"))
    for v in (slow, fast):
        hub.add_viewer(v, hub.flv_prelude(HTTP_FLV_10))
    ts = 0
    for _gop in range(6):
        for i in range(10):
            ts += 33
            p.push(Kind.VIDEO, ts, key(500) if i == 0 else inter(500))
        # the stalled viewer's buffer never grows much past the backlog bound
        assert slow_t.buffered <= 1000 + 600 + len(hub.flv_prelude(HTTP_FLV_10))
    assert slow.closed and await asyncio.wait_for(slow.done, 1) == "too slow"
    assert not fast.closed and slow not in hub.viewers and fast in hub.viewers
    assert len([x for x in tags(fast_t) if x.tag_type == 9]) == 2 + 60


async def test_viewer_that_catches_up_resumes_at_a_keyframe() -> None:
    reg = registry(viewer_max_backlog_bytes=1000, viewer_drop_after_skips=10)
    p = reg.publish("live", "c", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "c")
    t = MemTransport(stalled=True)
    v = Viewer(t, HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(v, hub.flv_prelude(HTTP_FLV_10))
    for i in range(1, 5):
        p.push(Kind.VIDEO, i * 33, inter(600))
    assert v.waiting_keyframe
    t.stalled, t.buffered = False, 0  # the network recovered
    p.push(Kind.VIDEO, 200, inter(600))
    before = len(t.received)
    assert before == 0
    p.push(Kind.VIDEO, 233, key(600))
    first = tags(t)[0]
    assert flv.parse_video_header(first.body).keyframe and first.timestamp == 233


async def test_publisher_leaving_lingers_then_ends_viewers() -> None:
    reg = registry()
    p = reg.publish("live", "l", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "l")
    v = Viewer(MemTransport(), HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(v, hub.flv_prelude(HTTP_FLV_10))
    p.close("peer closed")
    assert not v.closed and reg.get("live", "l") is hub
    reason = await asyncio.wait_for(v.done, 2)
    assert reason.startswith("stream ended") and reg.get("live", "l") is None


async def test_audio_only_stream_starts_viewers_at_once() -> None:
    reg = registry()
    p = reg.publish("live", "a", PublisherInfo("p"))
    p.push(Kind.AUDIO, 0, AAC_HDR)
    for i in range(5):
        p.push(Kind.AUDIO, i * 23, aac())
    hub = reg.get("live", "a")
    t = MemTransport()
    hub.add_viewer(Viewer(t, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    p.push(Kind.AUDIO, 200, aac())
    got = tags(t)
    assert bytes(t.received[:5]) == b"FLV\x01\x04"
    assert got[0].body == AAC_HDR and got[-1].timestamp == 200


async def test_audio_only_cache_keeps_a_window_of_the_latest_audio() -> None:
    """A new viewer (and the recorder, which attaches after the publish) gets the last
    ``audio_only_cache_ms`` of audio, not just the latest frame; the cache stays bounded."""
    reg = registry(audio_only_cache_ms=500)
    p = reg.publish("live", "aw", PublisherInfo("p"))
    p.push(Kind.AUDIO, 0, AAC_HDR)
    for i in range(100):  # 2.3 s of 23 ms frames
        p.push(Kind.AUDIO, i * 23, aac())
    hub = reg.get("live", "aw")
    frames, complete = hub.prelude_frames()
    audio = [f for f in frames if f.kind == Kind.AUDIO and not f.header]
    assert complete and audio[-1].dts == 99 * 23
    assert audio[-1].dts - audio[0].dts <= 500 < audio[-1].dts - audio[0].dts + 2 * 23
    assert {b.dts - a.dts for a, b in itertools.pairwise(audio)} == {23}
    t = MemTransport()
    hub.add_viewer(Viewer(t, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    got = [tag for tag in tags(t) if tag.body != AAC_HDR]
    assert [tag.timestamp for tag in got] == [f.dts for f in audio]


async def test_coalesced_batches_join_frames_and_new_viewers_miss_nothing() -> None:
    reg = registry(write_coalesce_ms=20)
    p = reg.publish("live", "co", PublisherInfo("p"))
    p.push(Kind.VIDEO, 0, AVC_HDR)
    p.push(Kind.AUDIO, 0, AAC_HDR)
    p.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "co")
    t1 = MemTransport()
    hub.add_viewer(Viewer(t1, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    writes: list[int] = []
    orig = t1.write
    t1.write = lambda data: (writes.append(len(data)), orig(data))  # type: ignore[method-assign]
    for i in range(1, 4):
        p.push(Kind.AUDIO, i * 10, aac())
    assert writes == []  # audio waits for the next picture or the tick
    # a viewer joining mid-batch gets the pending frames through its GOP prelude, once
    t2 = MemTransport()
    hub.add_viewer(Viewer(t2, HTTP_FLV_10, ViewerInfo("flv")), hub.flv_prelude(HTTP_FLV_10))
    assert writes == []  # a join does not flush the batch (that costs a write per viewer)
    p.push(Kind.VIDEO, 33, inter())  # a picture closes the batch
    assert len(writes) == 1  # the whole batch as one write, at once
    p.push(Kind.AUDIO, 40, aac())
    assert len(writes) == 1
    await wait_for(lambda: len(writes) == 2, 5)  # audio alone: the tick sends it
    for t in (t1, t2):
        ts = [(x.tag_type, x.timestamp) for x in tags(t) if x.body not in (AVC_HDR, AAC_HDR)]
        assert ts == [(9, 0), (8, 10), (8, 20), (8, 30), (9, 33), (8, 40)], ts


def _tick_after_push(reg: StreamRegistry, pub, joins: int, viewers: int) -> float:
    """Seconds until the flush scheduled by the next frame, with ``viewers`` attached of
    whom ``joins`` joined since the last flush."""
    hub = reg.get("live", "tick")
    loop = asyncio.get_running_loop()
    for i in range(viewers):
        v = Viewer(MemTransport(), HTTP_FLV_10, ViewerInfo("flv"))
        hub.add_viewer(v, None)
        if i >= joins:
            hub._joins -= 1  # count only the last ``joins`` as new since the last flush
    hub._flush()
    pub.push(Kind.AUDIO, 5000, aac())  # audio waits for the tick (a picture would not)
    assert hub._flush_handle is not None
    return hub._flush_handle.when() - loop.time()


async def test_write_tick_grows_with_the_audience_and_with_a_join_herd() -> None:
    kw = {"write_coalesce_ms": 30, "write_coalesce_max_ms": 90, "write_coalesce_per_viewer_us": 45}
    for viewers, joins, expected in [(10, 0, 0.030), (1000, 0, 0.045), (4000, 0, 0.090)]:
        reg = registry(**kw)
        pub = reg.publish("live", "tick", PublisherInfo("test"))
        pub.push(Kind.VIDEO, 0, AVC_HDR)
        pub.push(Kind.VIDEO, 0, key())
        delay = _tick_after_push(reg, pub, joins, viewers)
        assert abs(delay - expected) < 0.005, (viewers, delay)
    # 20 viewers, all just joined: a herd, so the tick is as long as allowed.
    reg = registry(**kw)
    pub = reg.publish("live", "tick", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, AVC_HDR)
    pub.push(Kind.VIDEO, 0, key())
    assert abs(_tick_after_push(reg, pub, 20, 20) - 0.090) < 0.005
    # A fixed tick when the per-viewer growth is off.
    reg = registry(**{**kw, "write_coalesce_per_viewer_us": 0})
    pub = reg.publish("live", "tick", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, AVC_HDR)
    pub.push(Kind.VIDEO, 0, key())
    assert abs(_tick_after_push(reg, pub, 0, 4000) - 0.030) < 0.005
