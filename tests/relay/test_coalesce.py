"""The write-coalescing policy: frames go out at once while a stream has few viewers and
are merged per tick (serialize once, one write per viewer per tick) once its audience is
large enough for the saved system calls to matter, with hysteresis between the two."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from media import flv
from media.frame import Kind
from relay import REGISTRY
from relay.config import RelayConfig
from relay.formats import HTTP_FLV_10
from relay.hub import PublisherInfo, StreamHub, StreamRegistry, Viewer, ViewerInfo
from tests.integration.test_media_path import FlvReader, _read_http
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.relay.test_hub import AAC_HDR, AVC_HDR, MemTransport, aac, inter, key, tags


class Recording(MemTransport):
    """Keeps every object written, to check that viewers share one encoding."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.objects.append(data)
        super().write(data)


def live_hub(cfg: RelayConfig) -> tuple[StreamRegistry, Any, StreamHub]:
    reg = StreamRegistry(cfg, linger_seconds=0.05)
    pub = reg.publish("live", "c", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, AVC_HDR)
    pub.push(Kind.AUDIO, 0, AAC_HDR)
    pub.push(Kind.VIDEO, 0, key())
    hub = reg.get("live", "c")
    assert hub is not None
    return reg, pub, hub


def attach(hub: StreamHub, transport: Any) -> Viewer:
    viewer = Viewer(transport, HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(viewer, hub.flv_prelude(HTTP_FLV_10))
    return viewer


@contextlib.asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader]]:
    """A real loopback TCP connection: the server side's transport and the client's reader."""
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(w)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    server_writer = await asyncio.wait_for(accepted, 10)
    try:
        yield server_writer.transport, reader  # type: ignore[misc]
    finally:
        writer.close()
        server_writer.close()
        server.close()
        await server.wait_closed()


class TagReader:
    """FLV tags read back from the client side of a socket."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.demux = flv.FlvDemuxer()

    async def tags(self, want: int) -> list[flv.FlvTag]:
        got: list[flv.FlvTag] = []
        while len(got) < want:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "connection closed"
            got += [x for x in self.demux.feed(data) if isinstance(x, flv.FlvTag)]
        assert len(got) == want, got
        return got


async def test_a_lone_viewer_gets_each_frame_in_the_loop_turn_it_is_published() -> None:
    """The defaults: one viewer over a real socket. Each frame is written before
    ``push`` returns (no await in between, no timer armed), then read from the socket."""
    cfg = RelayConfig()
    assert cfg.write_coalesce_ms > 0 and cfg.write_coalesce_min_viewers > 1
    _reg, pub, hub = live_hub(cfg)
    async with socket_pair() as (transport, reader):
        viewer = attach(hub, transport)
        client = TagReader(reader)
        prelude = await client.tags(3)  # no metadata: the two headers + the keyframe
        assert [t.tag_type for t in prelude] == [9, 8, 9]
        for i in range(1, 6):
            ts = i * 33
            kind, payload = (Kind.AUDIO, aac()) if i % 2 else (Kind.VIDEO, inter())
            pub.push(kind, ts, payload)
            # synchronous: the frame is already in the transport, nothing waits on a tick
            assert viewer.writes == i
            assert hub._flush_handle is None and hub._pending == []
            (tag,) = await client.tags(1)
            assert tag.timestamp == ts and tag.tag_type == (8 if kind is Kind.AUDIO else 9)


@pytest.mark.parametrize("audio", [0, 1, 5])
async def test_above_the_threshold_a_batch_is_one_shared_write_per_viewer(audio: int) -> None:
    """4 viewers, threshold 4: audio is held (for the next picture, or the tick); each
    picture closes the batch: one write per viewer per picture, the very same bytes
    object for every viewer."""
    cfg = replace(RelayConfig(), write_coalesce_ms=5000, write_coalesce_min_viewers=4)
    _reg, pub, hub = live_hub(cfg)
    transports = [Recording() for _ in range(4)]
    viewers = [attach(hub, t) for t in transports]
    for t in transports:
        t.objects.clear()
    pictures = 10
    sent: list[tuple[int, int]] = []
    for n in range(1, pictures + 1):
        for a in range(audio):
            ts = (n - 1) * 33 + 1 + a
            pub.push(Kind.AUDIO, ts, aac())
            sent.append((8, ts))
        assert all(v.writes == n - 1 for v in viewers)  # audio held
        assert hub._flush_handle is not None or not audio
        pub.push(Kind.VIDEO, n * 33, inter())
        sent.append((9, n * 33))
        assert all(v.writes == n for v in viewers)  # the picture went out at once
        assert hub._flush_handle is None
    assert [v.writes for v in viewers] == [pictures] * 4
    for i in range(pictures):
        first = transports[0].objects[i]
        assert all(t.objects[i] is first for t in transports)
    for t in transports:
        got = [(x.tag_type, x.timestamp) for x in tags(t) if x.body not in (AVC_HDR, AAC_HDR)]
        assert got == [(9, 0), *sent]


async def test_audio_only_batches_go_out_on_the_tick() -> None:
    cfg = replace(RelayConfig(), write_coalesce_ms=20, write_coalesce_min_viewers=2)
    reg = StreamRegistry(cfg, linger_seconds=0.05)
    pub = reg.publish("live", "a", PublisherInfo("test"))
    pub.push(Kind.AUDIO, 0, AAC_HDR)
    pub.push(Kind.AUDIO, 0, aac())
    hub = reg.get("live", "a")
    assert hub is not None
    viewers = [attach(hub, MemTransport()) for _ in range(2)]
    for i in range(1, 11):
        pub.push(Kind.AUDIO, i * 21, aac())
    assert [v.writes for v in viewers] == [0, 0] and hub._flush_handle is not None
    await wait_for(lambda: all(v.writes for v in viewers), 5)
    assert [v.writes for v in viewers] == [1, 1]  # ten frames, one write each


async def test_the_mode_flips_with_hysteresis_and_keeps_frame_order() -> None:
    cfg = replace(RelayConfig(), write_coalesce_ms=5000, write_coalesce_min_viewers=4)
    _reg, pub, hub = live_hub(cfg)
    transports = [MemTransport() for _ in range(4)]
    viewers = [attach(hub, t) for t in transports[:3]]
    pub.push(Kind.AUDIO, 33, aac())
    assert [v.writes for v in viewers] == [1, 1, 1]  # 3 viewers: below the threshold
    viewers.append(attach(hub, transports[3]))
    pub.push(Kind.AUDIO, 66, aac())
    assert [v.writes for v in viewers] == [1, 1, 1, 0]  # 4: merged
    viewers[3].close("gone")
    pub.push(Kind.AUDIO, 99, aac())  # 3 = three quarters of 4: still merging
    assert [v.writes for v in viewers[:3]] == [1, 1, 1]
    viewers[2].close("gone")
    # 2 viewers: below three quarters; the pending batch goes out first, then this frame
    pub.push(Kind.AUDIO, 132, aac())
    assert [v.writes for v in viewers[:2]] == [3, 3]
    assert hub._pending == [] and hub._flush_handle is None
    for t in transports[:2]:
        ts = [x.timestamp for x in tags(t) if x.tag_type == 8 and x.body != AAC_HDR]
        assert ts == [33, 66, 99, 132]


async def test_no_tick_at_all_when_coalescing_is_off() -> None:
    cfg = replace(RelayConfig(), write_coalesce_ms=0, write_coalesce_min_viewers=1)
    _reg, pub, hub = live_hub(cfg)
    viewers = [attach(hub, MemTransport()) for _ in range(3)]
    for i in range(1, 11):
        pub.push(Kind.VIDEO, i * 33, inter())
    assert [v.writes for v in viewers] == [10, 10, 10]
    assert hub._flush_handle is None


async def test_during_a_join_herd_pictures_wait_for_the_longest_tick() -> None:
    """16 or more joins since the last batch: the loop's time goes to starting them, so a
    picture does not close the batch; the tick is ``write_coalesce_max_ms``."""
    cfg = RelayConfig(
        write_coalesce_ms=10, write_coalesce_max_ms=5000, write_coalesce_min_viewers=4
    )
    _reg, pub, hub = live_hub(cfg)
    viewers = [attach(hub, MemTransport()) for _ in range(20)]
    pub.push(Kind.VIDEO, 33, inter())
    assert all(v.writes == 0 for v in viewers)
    assert hub._flush_handle is not None
    assert hub._flush_handle.when() - asyncio.get_running_loop().time() > 4
    hub._flush()
    pub.push(Kind.VIDEO, 66, inter())  # no joins since: a picture goes out at once
    assert all(v.writes == 2 for v in viewers)


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("coalesce") / "av.flv", 4.0, gop=30)


@pytest.mark.parametrize("min_viewers", [1, 1000])
async def test_a_real_server_batches_only_above_the_threshold(
    server_factory: Any, av_clip: Path, min_viewers: int
) -> None:
    """ffmpeg publishing, three HTTP-FLV viewers over real sockets. Threshold 1: merged
    (about a write per picture, the audio riding along); threshold 1000: a write per
    frame. Either way every frame arrives, in order."""
    srv = await server_factory(
        relay={"write_coalesce_ms": 40, "write_coalesce_min_viewers": min_viewers}
    )
    pub = await start_publisher(srv.push_url("co"), av_clip, loop=True)
    try:
        await wait_for(lambda: (h := srv.app[REGISTRY].get("live", "co")) is not None and h.ready)
        hub = srv.app[REGISTRY].get("live", "co")
        assert hub is not None and hub.publisher is not None
        publisher = hub.publisher
        readers = [FlvReader() for _ in range(3)]
        reading = asyncio.gather(
            *(
                _read_http(f"{srv.http_url}/live/co.flv", r, lambda r: len(r.video()) > 150)
                for r in readers
            )
        )
        try:
            await wait_for(lambda: sum(v.info.protocol == "flv" for v in hub.viewers) == 3, 15)
            viewers = [v for v in hub.viewers if v.info.protocol == "flv"]
            w0, f0 = [v.writes for v in viewers], publisher.frames_in
            await wait_for(lambda: publisher.frames_in >= f0 + 80, 15)
            await wait_for(lambda: not hub._pending, 5)
            w1, f1 = [v.writes for v in viewers], publisher.frames_in
            await asyncio.wait_for(reading, 30)
        finally:
            reading.cancel()
        for r in readers:
            media = [t.timestamp for t in r.tags if t.tag_type in (8, 9)]
            assert media == sorted(media)
            assert len(r.video()) > 150
    finally:
        await stop(pub)
    # ~77 frames a second: 30 pictures, ~47 AAC frames
    ratios = [(b - a) / (f1 - f0) for a, b in zip(w0, w1, strict=True)]
    if min_viewers == 1:
        assert all(0.2 < x < 0.6 for x in ratios), ratios
    else:
        assert all(x == 1.0 for x in ratios), ratios
