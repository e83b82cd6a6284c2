"""Pre-framed fan-out (danmaku/wire.py, danmaku/websocket.py): shared frames, no deflate,
fallbacks, slow viewers."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from bench.danmaku import eio
from danmaku.service import DANMAKU
from danmaku.wire import ws_text_frame
from tests.danmaku.helpers import NS, Viewer, join, token, wait_until

ROOM = "live/fan"
DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def hub_of(server):
    return server.app[DANMAKU].hub


class Recorder:
    """Every Socket.IO event of a raw client, decoded: ``[(event, data), ...]``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __call__(self, client: eio.EioClient, body: bytes) -> None:
        args = json.loads(body)
        self.events.append((args[0], args[1] if len(args) > 1 else None))

    def of(self, name: str) -> list[Any]:
        return [d for e, d in self.events if e == name]

    @property
    def texts(self) -> list[str]:
        return [c["text"] for b in self.of("comments") for c in b["comments"]]


def assert_in_order(events: list[tuple[str, Any]]) -> None:
    """``joined`` first, then batches with consecutive ``seq`` (none lost, none reordered)."""
    assert events and events[0][0] == "joined", events[:2]
    seqs = [d["seq"] for e, d in events if e == "comments"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_text_frame_header_depends_only_on_length() -> None:
    assert ws_text_frame(b"") == b"\x81\x00"
    assert ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    big = ws_text_frame(b"x" * 65536)
    assert big[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big") and len(big) == 65546


async def test_websocket_viewers_share_uncompressed_frames(server_factory) -> None:
    server = await server_factory(danmaku={"tick_ms": 50, "rate_capacity": 100.0})
    hub = hub_of(server)
    port = server.runtime.http_port
    rec = Recorder()
    raw = await eio.connect(
        "127.0.0.1", port, {"room": ROOM, "token": token("raw")}, rec, headers=DEFLATE
    )
    head = raw.response_head.lower()
    assert b" 101 " in head and b"permessage-deflate" not in head  # compression refused
    lib = await join(server, ROOM, "lib")  # python-socketio client, websocket
    sender = await join(server, ROOM, "sender")
    direct0 = hub.stats.direct_frames
    for i in range(30):
        assert (await sender.call("comment", f"c{i}"))["ok"]
    want = [f"c{i}" for i in range(30)]
    await wait_until(lambda: rec.texts == want, what="raw viewer got all 30")
    await wait_until(lambda: lib.texts == want, what="library viewer got all 30")
    assert raw.rsv_bits == 0
    assert_in_order(rec.events)
    assert_in_order(lib.events)
    # the batches went out pre-framed, written straight to the transports
    assert hub.stats.direct_frames - direct0 >= 3
    raw.close()
    for v in (lib, sender):
        await v.close()


async def test_polling_and_upgrading_viewers_take_the_queued_path(server_factory) -> None:
    server = await server_factory(danmaku={"tick_ms": 30, "rate_capacity": 1000.0})
    hub = hub_of(server)
    sender = await join(server, ROOM, "sender")
    stop = asyncio.Event()
    sent: list[str] = []

    async def chatter() -> None:
        i = 0
        while not stop.is_set():
            text = f"m{i}"
            if (await sender.call("comment", text))["ok"]:
                sent.append(text)
            i += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(chatter())
    await wait_until(lambda: len(sent) >= 5, what="chatter started")
    queued0 = hub.stats.queued_frames
    polling = Viewer()
    await polling.sio.connect(
        server.http_url, namespaces=[NS], auth={"room": ROOM, "token": token("p")},
        transports=["polling"], wait_timeout=5,
    )  # fmt: skip
    upgrading = Viewer()
    await upgrading.sio.connect(
        server.http_url, namespaces=[NS], auth={"room": ROOM, "token": token("u")},
        transports=["polling", "websocket"], wait_timeout=5,
    )  # fmt: skip
    await wait_until(lambda: upgrading.sio.transport() == "websocket", what="upgraded")
    await wait_until(lambda: len(upgrading.of("comments")) >= 10, what="batches after upgrade")
    stop.set()
    await task
    last = sent[-1]
    for v in (polling, upgrading):
        await wait_until(lambda v=v: last in v.texts, what="last comment everywhere")
        assert_in_order(v.events)
        texts = v.texts
        assert texts == sent[sent.index(texts[0]) :]  # contiguous from the first one seen
    assert polling.sio.transport() == "polling"
    assert hub.stats.queued_frames - queued0 >= 5
    # python-engineio's polling client waits for its pending long-poll GET on a clean
    # disconnect (up to the 25 s ping interval): send CLOSE and do not wait for it.
    await polling.sio.eio.disconnect(abort=True)
    for v in (upgrading, sender):
        await v.close()


async def test_slow_viewer_is_dropped_and_nobody_else_notices(server_factory) -> None:
    server = await server_factory(
        danmaku={
            "tick_ms": 20,
            "rate_capacity": 100000.0,
            "rate_per_s": 100000.0,
            "batch_max_comments": 100000,
            "client_backlog_bytes": 32768,
        }
    )
    hub = hub_of(server)
    port = server.runtime.http_port
    small = socket.socket()
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    small.setblocking(False)
    slow_rec = Recorder()
    slow = await eio.connect(
        "127.0.0.1", port, {"room": ROOM, "token": token("slow")}, slow_rec, sock=small
    )
    await wait_until(lambda: slow_rec.of("joined"), what="slow viewer joined")
    assert slow.transport is not None
    slow.transport.pause_reading()  # stops reading: its kernel buffers fill, then ours
    good_rec = Recorder()
    good = await eio.connect("127.0.0.1", port, {"room": ROOM, "token": token("good")}, good_rec)
    writer = await eio.connect("127.0.0.1", port, {"room": ROOM, "token": token("writer")})
    text = "z" * 190
    n = 0
    while not hub.stats.slow_clients_dropped and n < 20000:
        for _ in range(100):
            writer.emit("comment", f"{n:06d}{text}")
            n += 1
        await asyncio.sleep(0.01)
    await wait_until(lambda: hub.stats.slow_clients_dropped >= 1, what="slow viewer dropped")
    await wait_until(lambda: len(good_rec.texts) == n, timeout=20, what="good viewer got all")
    assert good_rec.texts == [f"{i:06d}{text}" for i in range(n)]
    assert_in_order(good_rec.events)
    assert not good.closed.done()
    # the slow one leaves the room (its disconnect is handled after the drop, not with it)
    await wait_until(
        lambda: server.app[DANMAKU].stats()["rooms"][ROOM]["local_members"] == 2,
        timeout=10,
        what="the dropped viewer left the room",
    )
    slow.transport.resume_reading()
    await asyncio.wait_for(slow.closed, 10)  # its connection was closed, not left open
    for c in (good, writer, slow):
        c.close()
