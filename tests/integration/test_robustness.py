"""Abusive peers on a real server: garbage, stalls, many publishers. Nobody else suffers."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
from pathlib import Path

import psutil
import pytest

from media import flv
from media.rtmp import chunk as C
from media.rtmp.client import ClientConnection
from media.rtmp.handshake import client_hello
from relay import REGISTRY
from tests.integration.test_media_path import FlvReader, _read_http
from tests.mediautil import make_clip, start_publisher, stop, wait_for


@pytest.fixture(scope="session")
def loop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "rb_loop.flv", 4.0, gop=30)


@pytest.fixture(scope="session")
def fat_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~2 Mbps, keyframe every second
    return make_clip(
        tmp_path_factory.mktemp("clips") / "fat.flv",
        4.0,
        gop=30,
        size="640x360",
        extra=[
            "-b:v",
            "2M",
            "-minrate",
            "2M",
            "-maxrate",
            "2M",
            "-bufsize",
            "1M",
            "-x264-params",
            "nal-hrd=cbr",
        ],
    )


async def _abuse(host: str, port: int, kind: str, rnd: random.Random) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if kind == "garbage":
            writer.write(rnd.randbytes(rnd.randint(1, 5000)))
        elif kind == "bad_version":
            writer.write(b"\x06" + rnd.randbytes(1536))
        elif kind == "huge_message":
            writer.write(client_hello() + b"\x00" * 1536)
            writer.write(
                C.encode_message(6, 9, 1, 0, b"", 128)[:1]
                + b"\x00\x00\x00\xff\xff\xff\x09\x01\x00\x00\x00"
            )
        elif kind == "mutated":
            client = ClientConnection()
            client.connect("live", "rtmp://x/live")
            client.create_stream()
            client.publish(1, "victim")
            c0c1 = client.data_to_send()
            client.receive_data(b"\x03" + b"\x00" * 3072)
            session = bytearray(client.data_to_send())
            for _ in range(5):
                session[rnd.randrange(1536, len(session))] ^= rnd.randint(1, 255)
            writer.write(c0c1 + bytes(session))
        elif kind == "amf_bomb":
            writer.write(client_hello() + b"\x00" * 1536)
            bomb = b"\x02\x00\x07connect\x00" + b"\x00" * 8 + b"\x03\x00\x01a" * 200
            writer.write(C.encode_message(3, C.COMMAND_AMF0, 0, 0, bomb, 128))
        await writer.drain()
        # the server closes us (or we give up waiting after a while)
        try:
            while await asyncio.wait_for(reader.read(65536), 3):
                pass
        except TimeoutError:
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_abusive_peers_do_not_disturb_a_live_stream(server_factory, loop_clip):
    srv = await server_factory(ingest={"handshake_timeout": 1.0})
    registry = srv.app[REGISTRY]
    pub = await start_publisher(srv.push_url("victim"), loop_clip, loop=True)
    try:
        await wait_for(
            lambda: (h := registry.get("live", "victim")) is not None and h.gop_valid, 10
        )
        reader = FlvReader()
        viewer = asyncio.create_task(
            _read_http(f"{srv.http_url}/live/victim.flv", reader, lambda r: False)
        )
        await wait_for(lambda: len(reader.tags) > 10, 10)
        publisher_before = registry.get("live", "victim").publisher
        rnd = random.Random(1234)
        kinds = ["garbage", "bad_version", "huge_message", "mutated", "amf_bomb"] * 8
        port = srv.runtime.rtmp_port
        during = len(reader.tags)
        await asyncio.wait_for(
            asyncio.gather(*(_abuse("127.0.0.1", port, k, rnd) for k in kinds)), 20
        )
        after = len(reader.tags)
        await wait_for(lambda: len(reader.tags) > after + 30, 10)
        assert not viewer.done()
        # the viewer lost nothing meanwhile: its video timeline has no hole (30 fps clip)
        ts = [t.timestamp for t in reader.tags[during:] if t.tag_type == flv.TAG_VIDEO]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert gaps and max(gaps) <= 100, f"frames missing during the abuse: {max(gaps)} ms"
        hub = registry.get("live", "victim")
        assert hub.publisher is publisher_before and hub.live, "the real publisher was disturbed"
        # every abusive connection was closed by the server
        await wait_for(lambda: len(srv.app[__import__("ingest").RTMP_SERVER].sessions) == 1, 10)
        viewer.cancel()
    finally:
        await stop(pub)


async def test_silent_connections_time_out(server_factory):
    srv = await server_factory(ingest={"handshake_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.runtime.rtmp_port)
    data = await asyncio.wait_for(reader.read(100), 5)
    assert data == b""  # closed by the server, not by us
    writer.close()


def _stalled_viewer(port: int, path: str) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s  # never read


async def test_stalled_viewers_keep_memory_bounded_and_are_dropped(server_factory, fat_clip):
    srv = await server_factory(
        relay={"viewer_max_backlog_bytes": 256 * 1024, "viewer_drop_after_skips": 4}
    )
    registry = srv.app[REGISTRY]
    pub = await start_publisher(srv.push_url("fat"), fat_clip, loop=True)
    socks: list[socket.socket] = []
    proc = psutil.Process(os.getpid())
    try:
        await wait_for(lambda: (h := registry.get("live", "fat")) is not None and h.gop_valid, 10)
        healthy = FlvReader()
        task = asyncio.create_task(
            _read_http(f"{srv.http_url}/live/fat.flv", healthy, lambda r: False)
        )
        socks = [_stalled_viewer(srv.runtime.http_port, "/live/fat.flv") for _ in range(100)]
        hub = registry.get("live", "fat")

        def flv_viewers() -> int:
            return sum(v.info.protocol == "flv" for v in hub.viewers)

        await wait_for(lambda: flv_viewers() == 101, 10)
        rss_start = proc.memory_info().rss
        peak = {"rss": rss_start, "buffered": 0}

        def dropped_while_bounded() -> bool:
            """Sampled at every poll until the stalled viewers are gone: the write
            buffers stay within their caps, and so does the process's memory."""
            buffered = sum(
                v.transport.get_write_buffer_size() for v in hub.viewers if v.info.protocol == "flv"
            )
            peak["buffered"] = max(peak["buffered"], buffered)
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            return flv_viewers() <= 1

        # stalled viewers are dropped after a few keyframes; the healthy one stays
        await wait_for(dropped_while_bounded, 30, step=0.05)
        caps = 101 * (256 * 1024 + 600 * 1024)  # per viewer: the backlog cap + one batch
        assert peak["buffered"] <= caps, peak
        # the process's memory follows the caps (plus the allocator's slack), not the time
        # the viewers stall: the guarantee, not a figure from one run
        growth = (peak["rss"] - rss_start) / 1e6
        bound = caps / 1e6 + 16
        assert growth < bound, f"RSS grew {growth:.1f} MB with 100 stalled viewers (> {bound:.0f})"
        n = len(healthy.tags)
        await wait_for(lambda: len(healthy.tags) > n + 30, 10)
        assert not task.done()
        task.cancel()
    finally:
        for s in socks:
            s.close()
        await stop(pub)


async def test_many_publishers_are_independent(server, loop_clip):
    registry = server.app[REGISTRY]
    pubs = [await start_publisher(server.push_url(f"m{i}"), loop_clip, loop=True) for i in range(4)]
    try:
        await wait_for(
            lambda: all(
                (h := registry.get("live", f"m{i}")) is not None and h.gop_valid for i in range(4)
            ),
            15,
        )
        readers = [FlvReader() for _ in range(4)]
        await asyncio.gather(
            *(
                asyncio.wait_for(
                    _read_http(
                        f"{server.http_url}/live/m{i}.flv", r, lambda r: len(r.video()) > 30
                    ),
                    15,
                )
                for i, r in enumerate(readers)
            )
        )
        # kill one publisher: the others go on
        await stop(pubs[0])
        await wait_for(
            lambda: not registry.get("live", "m0") or not registry.get("live", "m0").live, 10
        )
        assert all(registry.get("live", f"m{i}").live for i in range(1, 4))
    finally:
        for p in pubs:
            await stop(p)
