"""LL-HLS when the picture stops but the sound goes on, with a real RTMP publisher.

The publisher (our RTMP client core over a real socket) sends a real encoded clip: 2 s of
video and audio, then audio alone (an app sent to the background, a camera unplugged),
then video again from a keyframe. While it sends no video at all, the playlist must list
audio-only parts (INDEPENDENT=YES) that reach close to the newest audio: the parts keep
coming; they are read back over HTTP. When video is back, its keyframe opens a segment.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from media.fmp4 import PartCutter
from media.frame import Frame, Kind
from media.rtmp import chunk as C
from media.rtmp.client import ClientConnection, CommandReply
from relay.hls_http import HLS
from relay.http import REGISTRY
from tests.media.test_fmp4 import flv_frames, parse_part
from tests.mediautil import make_clip, wait_for
from tests.relay.hls_check import check, parse

VIDEO_STOPS = 2000
VIDEO_BACK = 6000  # a keyframe there (a GOP a second)
END = 8000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    path = make_clip(tmp_path_factory.mktemp("hlsgap") / "av.flv", END / 1000, gop=30)
    return [f for f in flv_frames(path) if f.kind in (Kind.VIDEO, Kind.AUDIO)]


class RtmpPublisher:
    """A publisher over a real socket: our client core, frames sent as we choose."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.client = ClientConnection()
        self.started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, push_url: str) -> RtmpPublisher:
        url = urlsplit(push_url)
        app, name = url.path.strip("/").split("/", 1)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        pub = cls(reader, writer)
        pub.client.connect(app, f"rtmp://{url.hostname}:{url.port}/{app}")
        pub.client.create_stream()
        pub.client.publish(1, f"{name}?{url.query}")
        await pub.flush()
        await asyncio.wait_for(pub.started, 10)
        return pub

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.client.receive_data(data):
                if (
                    isinstance(event, CommandReply)
                    and event.info.get("code") == "NetStream.Publish.Start"
                    and not self.started.done()
                ):
                    self.started.set_result(None)
            await self.flush()

    async def flush(self) -> None:
        self.writer.write(self.client.data_to_send())
        await self.writer.drain()

    async def send(self, frames: list[Frame]) -> None:
        for f in frames:
            type_id = C.VIDEO if f.kind == Kind.VIDEO else C.AUDIO
            self.client.send_media(type_id, 1, f.dts, bytes(f.payload))
        await self.flush()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def listed_parts(base: str) -> list[tuple[int, dict[str, str], bytes]]:
    """(msn, EXT-X-PART attributes, part bytes read over HTTP) of every part listed."""
    status, body = await get(f"{base}/s.m3u8")
    assert status == 200, body
    pl = parse(body.decode())
    check(pl)  # parts within PART-TARGET, indexes, hint, ...
    out = []
    for seg in pl.segments:
        for attrs in seg.parts:
            status, data = await get(f"{base}/{attrs['URI']}")
            assert status == 200 and data[4:8] == b"moof"
            out.append((seg.msn, attrs, data))
    return out


def media_of(data: bytes) -> tuple[float, bool]:
    """(start in seconds by the audio track, whether the part has video samples)."""
    _, runs = parse_part(data)
    audio = runs.get(2)
    start = audio.tfdt / 44_100 if audio is not None else runs[1].tfdt / 90_000
    return start, 1 in runs and bool(runs[1].samples)


async def test_audio_parts_keep_coming_while_the_video_is_stopped(
    server_factory: Any, clip: list[Frame]
) -> None:
    server = await server_factory(relay={"publisher_linger": 2.0})
    base = f"{server.http_url}/live"
    pub = await RtmpPublisher.open(server.push_url("s"))
    try:
        headers = [f for f in clip if f.header]
        media = [f for f in clip if not f.header]
        before = [f for f in media if f.dts < VIDEO_STOPS]
        audio_alone = [
            f for f in media if f.kind == Kind.AUDIO and VIDEO_STOPS <= f.dts < VIDEO_BACK
        ]
        after = [f for f in media if f.dts >= VIDEO_BACK]
        first_back = next(f for f in after if f.kind == Kind.VIDEO)
        assert first_back.keyframe and first_back.dts == VIDEO_BACK
        await pub.send(headers + before + audio_alone)
        registry = server.app[REGISTRY]
        await wait_for(lambda: registry.get("live", "s") is not None, 10)
        packager = server.app[HLS].packagers["live/s"]
        assert isinstance(packager.cutter, PartCutter)

        # No video has come for 4 s: the playlist still gets parts, audio-only, up to
        # within a part or so (+ the video gap it took to see it) of the newest audio.
        newest = audio_alone[-1].dts / 1000

        async def caught_up() -> bool:
            parts = await listed_parts(base)
            if not parts:
                return False
            start, has_video = media_of(parts[-1][2])
            return not has_video and start >= newest - 1.0

        await wait_for(caught_up, 20, step=0.1)
        parts = await listed_parts(base)
        gap = [(a, media_of(d)) for _, a, d in parts if media_of(d)[0] > VIDEO_STOPS / 1000 + 0.1]
        assert len(gap) >= 5
        for attrs, (_start, has_video) in gap:
            assert not has_video and attrs.get("INDEPENDENT") == "YES"
        assert not packager.closed

        # Video is back with a keyframe: it opens a segment, its part is independent.
        await pub.send(after)

        async def back() -> bool:
            return any(
                media_of(d)[1] and media_of(d)[0] >= 5.9 for _, _, d in await listed_parts(base)
            )

        await wait_for(back, 20, step=0.1)
        parts = await listed_parts(base)
        i = next(i for i, (_, _, d) in enumerate(parts) if media_of(d)[1] and media_of(d)[0] >= 5.9)
        msn, attrs, data = parts[i]
        assert attrs["URI"].endswith(f"part-{msn}.0.m4s"), "the keyframe opens a segment"
        assert attrs.get("INDEPENDENT") == "YES"
        _, runs = parse_part(data)
        assert runs[1].tfdt == VIDEO_BACK * 90 and runs[1].samples
        assert not packager.closed
    finally:
        await pub.close()
