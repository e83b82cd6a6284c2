"""Slowloris on the HTTP port (issue 17 item 9), on real servers (127.0.0.1, port 0).

Deadlines are small here (1 s); the checks are "closed before a generous bound" and "still
served after the deadline passed", never an exact timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from control import cli
from control.app import create_app
from core.runtime import RUNTIME
from media.frame import Kind
from relay import REGISTRY
from relay.fastplay import PlaySite
from relay.http_guard import Admission
from relay.hub import PublisherInfo
from tests.conftest import make_config
from tests.mediautil import operator_token, wait_for
from tests.relay.test_fastplay import _dechunk, _feed, _head

FAST = {"http_head_timeout": 1.0, "http_body_timeout": 1.0, "http_body_min_rate": 1000}
BOUND = 8.0
"""Seconds within which a connection past a 1 s deadline must be closed (generous)."""
PNG = b"\x89PNG\r\n\x1a\n" + bytes(2000)


class Trickle:
    """One connection that sends ``data`` a few bytes at a time and records when, and with
    what, the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = bytearray()
        self.sent = 0
        self.opened = 0.0
        self.closed_at: float | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened = asyncio.get_running_loop().time()

    async def _read(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.received += chunk
        except ConnectionError:
            pass
        self.closed_at = asyncio.get_running_loop().time()

    async def run(self, data: bytes, step: int = 1, interval: float = 0.2) -> float:
        """Trickle ``data``; the seconds from the connection's start until it was closed."""
        reading = asyncio.create_task(self._read())
        try:
            for i in range(0, len(data), step):
                if reading.done():
                    break
                try:
                    self.writer.write(data[i : i + step])
                    await self.writer.drain()
                except ConnectionError:
                    break
                self.sent = i + step
                await asyncio.wait({reading}, timeout=interval)  # the pace of the trickle
            await asyncio.wait_for(reading, BOUND)
        finally:
            reading.cancel()
            self.writer.close()
        assert self.closed_at is not None
        return self.closed_at - self.opened


async def _request(port: int, raw: bytes) -> tuple[str, bytes]:
    """One request on a fresh connection; the status line and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        status, headers = await _head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
        return status, body
    finally:
        writer.close()


async def _until(reader: asyncio.StreamReader, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        seen = seen[-len(marker) :] + await _dechunk(reader, 1)


def _marker_frame(n: int) -> tuple[bytes, bytes]:
    marker = b"MARK%06d" % n
    return marker, b"\x27\x01\x00\x00\x00" + marker * 20


HEADS = {
    # aiohttp's side: the first bytes are not a play, the sniffer hands over at once
    "api": b"POST /api/broadcasts HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400,
    # the fast path's side: it looks like a play until its head is complete
    "play": b"GET /live/s.flv HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400,
    # a keep-alive connection's second request, after a prompt first one
    "keepalive": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400,
}


@pytest.mark.parametrize("kind", sorted(HEADS))
async def test_a_trickled_head_is_cut_while_other_clients_are_served(server_factory, kind):
    srv = await server_factory(relay=FAST)
    port = srv.runtime.http_port
    pub = srv.app[REGISTRY].publish("live", "s", PublisherInfo("test"))
    _feed(pub)
    vr, vw = await asyncio.open_connection("127.0.0.1", port)
    vw.write(b"GET /live/s.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _head(vr))[0] == "HTTP/1.1 200 OK"
    await _dechunk(vr, 1)

    slow = Trickle(port)
    await slow.open()
    if kind == "keepalive":
        slow.writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        _status, headers = await _head(slow.reader)
        await slow.reader.readexactly(int(headers["content-length"]))
    lasted = await slow.run(HEADS[kind], step=2, interval=0.1)
    # Cut although bytes kept coming (a per-read timeout would never fire), long before the
    # head could have been completed at this pace (~20 s).
    assert lasted < BOUND and slow.sent < len(HEADS[kind]), (lasted, slow.sent)
    if kind != "keepalive":
        assert bytes(slow.received).startswith(b"HTTP/1.1 408 "), bytes(slow.received)[:80]

    # The viewer and an API client were not affected.
    marker, frame = _marker_frame(1)
    pub.push(Kind.VIDEO, 2000, frame)
    await asyncio.wait_for(_until(vr, marker), 5)
    async with aiohttp.ClientSession() as s, s.get(f"{srv.http_url}/healthz") as r:
        assert r.status == 200
    vw.close()


async def test_a_slow_body_is_cut_and_nothing_is_stored(server_factory):
    srv = await server_factory(relay=FAST)
    port = srv.runtime.http_port
    token = await operator_token(srv)
    auth = f"Authorization: Bearer {token}\r\n".encode()

    # A complete, valid broadcast, sent at 100 B/s (the minimum is 1000 B/s).
    body = json.dumps({"title": "slowloris", "scheduled_start": "2030-01-01T12:00:00Z"})
    body_b = body.encode() + b" " * 3000
    slow = Trickle(port)
    await slow.open()
    slow.writer.write(
        b"POST /api/broadcasts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: %d\r\n\r\n" % len(body_b)
    )
    lasted = await slow.run(body_b, step=20, interval=0.2)
    assert lasted < BOUND and slow.sent < len(body_b), (lasted, slow.sent)
    assert not bytes(slow.received).startswith(b"HTTP/1.1 2"), bytes(slow.received)[:80]

    # A cover trickled the same way: the connection is cut, no cover is set, no file left.
    status, created = await _request(
        port,
        b"POST /api/broadcasts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body.encode(),
    )
    assert " 201 " in status, created
    bid = json.loads(created)["id"]
    slow = Trickle(port)
    await slow.open()
    slow.writer.write(
        b"PUT /api/broadcasts/%s/cover HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        % str(bid).encode()
        + auth
        + b"Content-Length: %d\r\n\r\n" % len(PNG)
    )
    lasted = await slow.run(PNG, step=20, interval=0.2)
    assert lasted < BOUND and slow.sent < len(PNG), (lasted, slow.sent)

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        async with s.get(f"{srv.http_url}/api/broadcasts") as r:
            listed = await r.json()
        titles = [b["title"] for b in listed["items"]]
        assert titles.count("slowloris") == 1, titles  # only the prompt one
        async with s.get(f"{srv.http_url}/api/broadcasts/{bid}") as r:
            assert (await r.json())["cover_url"] is None
    covers = srv.runtime.data_dir / "covers"
    assert not covers.exists() or list(covers.iterdir()) == []

    # A body slower than the grace, but at a real uplink's rate, is taken: 40 KB in >= 2 s.
    big = b"\x89PNG\r\n\x1a\n" + bytes(40_000)
    up = Trickle(port)
    await up.open()
    up.writer.write(
        b"PUT /api/broadcasts/%s/cover HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Connection: close\r\n"
        % str(bid).encode()
        + auth
        + b"Content-Length: %d\r\n\r\n" % len(big)
    )
    lasted = await up.run(big, step=1000, interval=0.05)
    assert up.sent >= len(big) and lasted > 1.0
    assert bytes(up.received).startswith(b"HTTP/1.1 200 "), bytes(up.received)[:200]
    assert [p.stat().st_size for p in covers.iterdir()] == [len(big)]


async def test_an_idle_keepalive_connection_is_closed(tmp_path, monkeypatch):
    """Through ``berrylive serve``'s own start (cli.start_http): aiohttp's keepalive_timeout
    comes from the config."""
    monkeypatch.setattr(cli, "tune_gc", lambda: None)  # not in a test process
    cfg = make_config(tmp_path / "node", relay={"http_keepalive_timeout": 1.0})
    app = create_app(cfg)
    runner = await cli.start_http(cfg, app, shutdown_timeout=2)
    try:
        port = app[RUNTIME].http_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        for _ in range(2):  # keep-alive works: two requests on one connection
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers = await _head(reader)
            assert status == "HTTP/1.1 200 OK"
            await reader.readexactly(int(headers["content-length"]))
        idle_from = loop.time()
        assert await asyncio.wait_for(reader.read(), BOUND) == b""  # then, idle: closed
        assert loop.time() - idle_from < BOUND
        writer.close()
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)


async def test_the_per_address_cap_refuses_the_extra_connection(server_factory):
    srv = await server_factory(relay={"http_max_connections_per_ip": 3})
    port = srv.runtime.http_port
    site = next(s for s in srv.runner.sites if isinstance(s, PlaySite))
    conns = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # accepted and answered
        status, headers = await _head(reader)
        assert status == "HTTP/1.1 200 OK"
        await reader.readexactly(int(headers["content-length"]))
        conns.append((reader, writer))
    assert site.admission is not None and site.admission.total == 3
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await asyncio.wait_for(reader.read(), 5)
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    writer.close()
    # The others still work; one gone, a new one is admitted.
    status, _ = await _request_on(conns[0], b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    conns.pop()[1].close()
    await wait_for(lambda: site.admission is not None and site.admission.total == 2, 5)
    status, _ = await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    for _, w in conns:
        w.close()
    await wait_for(lambda: site.admission is not None and site.admission.total == 0, 5)


async def test_at_the_total_cap_the_oldest_unfinished_head_makes_room(server_factory):
    """The connection-flood drill in small: connections without a complete request head
    hold the total cap; a real client still gets in (the oldest of those is closed with a
    503 for it); a viewer and keep-alive clients are never closed for room; when every
    connection has sent a head, the newcomer is refused as before."""
    srv = await server_factory(relay={"http_max_connections": 4, "http_max_connections_per_ip": 0})
    port = srv.runtime.http_port
    site = next(s for s in srv.runner.sites if isinstance(s, PlaySite))
    admission = site.admission
    assert admission is not None
    pub = srv.app[REGISTRY].publish("live", "cap", PublisherInfo("test"))
    _feed(pub)
    viewer_r, viewer_w = await asyncio.open_connection("127.0.0.1", port)  # the fast path
    viewer_w.write(b"GET /live/cap.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = await _head(viewer_r)
    assert status == "HTTP/1.1 200 OK" and "berrylive" in headers["server"], headers
    keepalive = await asyncio.open_connection("127.0.0.1", port)
    status, _ = await _request_on(keepalive, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    silent = await asyncio.open_connection("127.0.0.1", port)  # the oldest without a head
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(b"GET /healthz HTTP/1.1\r\nHo")  # a head under way (slowloris)
    await wait_for(lambda: admission.total == 4 and len(admission.pending) == 2, 5)

    # a real HTTP client gets in: the silent connection is closed for it
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        closed = await asyncio.wait_for(silent[0].read(), 5)
        assert closed.startswith(b"HTTP/1.1 503 "), closed
        assert admission.evicted == 1 and len(admission.pending) == 1
        # a second one: the partial head goes (the client session's connection stays open)
        status, _ = await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        closed = await asyncio.wait_for(partial[0].read(), 5)
        assert closed.startswith(b"HTTP/1.1 503 "), closed
        assert admission.evicted == 2 and not admission.pending
        await wait_for(lambda: admission.total == 3, 5)
        # the viewer and the keep-alive client were never candidates
        marker, frame = _marker_frame(1)
        pub.push(Kind.VIDEO, 2000, frame)
        await asyncio.wait_for(_until(viewer_r, marker), 5)
        status, _ = await _request_on(keepalive, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"

        # every connection at the cap has sent a head: the newcomer is refused
        fourth = await asyncio.open_connection("127.0.0.1", port)
        status, _ = await _request_on(fourth, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert admission.total == 4 and not admission.pending
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 5)
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert admission.evicted == 2
        writer.close()
        status, _ = await _request_on(keepalive, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        fourth[1].close()
    for w in (viewer_w, keepalive[1], silent[1], partial[1]):
        w.close()
    await wait_for(lambda: admission.total == 0 and not admission.pending, 5)


def test_admission_evicts_the_oldest_pending_connection_only():
    """:class:`Admission` alone: at the total cap the oldest pending connection is evicted
    (uncounted once, its address too), established ones never; per-address refusals evict
    nothing."""

    class Conn:
        def __init__(self) -> None:
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True

    adm = Admission(3, 2)
    a, b, c, d, e = (Conn() for _ in range(5))
    assert adm.admit("x", a) is None and adm.admit("y", b) is None and adm.admit("z", c) is None
    adm.established(b)
    assert adm.admit("x", d) is None  # a (oldest pending) goes
    assert a.evicted and not b.evicted and not c.evicted
    assert adm.total == 3 and adm.per_ip == {"x": 1, "y": 1, "z": 1} and adm.evicted == 1
    assert adm.admit("x", Conn()) is None  # c goes; x now holds 2
    assert c.evicted and adm.per_ip == {"x": 2, "y": 1}
    assert adm.admit("x", e) == "too many connections from this address"
    assert not d.evicted and adm.evicted == 2
    adm.established(d)
    pending = list(adm.pending)
    assert len(pending) == 1
    adm.established(pending[0])
    assert adm.admit("w", e) == "too many connections"
    adm.release("x", d)
    assert adm.admit("w", e) is None and adm.total == 3 and adm.evicted == 2


async def _request_on(conn: Any, raw: bytes) -> tuple[str, bytes]:
    reader, writer = conn
    writer.write(raw)
    status, headers = await _head(reader)
    return status, await reader.readexactly(int(headers["content-length"]))


async def test_a_long_view_outlives_the_reading_deadlines(server_factory):
    srv = await server_factory(relay=dict(FAST, http_body_min_rate=0))
    port = srv.runtime.http_port
    pub = srv.app[REGISTRY].publish("live", "long", PublisherInfo("test"))
    _feed(pub)
    fast_r, fast_w = await asyncio.open_connection("127.0.0.1", port)  # the fast path
    fast_w.write(b"GET /live/long.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    full_r, full_w = await asyncio.open_connection("127.0.0.1", port)  # through aiohttp
    full_w.write(b"GET /live/long.flv HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    for reader, server in ((fast_r, "berrylive"), (full_r, "aiohttp")):
        status, headers = await _head(reader)
        assert status == "HTTP/1.1 200 OK" and server in headers["server"], headers
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.http_url}/live/long.flv") as ws:
        start = loop.time()
        n = 0
        # 3 s of media, three times the head and body deadlines, then one more frame that
        # every viewer must still get.
        while loop.time() - start < 3.0:
            n += 1
            pub.push(Kind.VIDEO, 1000 + n * 33, b"\x27\x01\x00\x00\x00" + bytes(100))
            await asyncio.wait_for(_dechunk(fast_r, 1), 5)  # paced by what the viewers get
        marker, frame = _marker_frame(n)
        pub.push(Kind.VIDEO, 1000 + (n + 1) * 33, frame)
        await asyncio.wait_for(_until(fast_r, marker), 5)
        await asyncio.wait_for(_until(full_r, marker), 5)
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            if marker in msg.data:
                break
    fast_w.close()
    full_w.close()


def test_serve_raises_the_fd_limit_and_warns_below_the_caps(tmp_path, caplog):
    cfg = make_config(tmp_path / "node")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level(logging.INFO, logger="berrylive"):
        soft = cli.raise_fd_limit(cfg)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    if hard != resource.RLIM_INFINITY:
        assert soft == hard
    assert f"file-descriptor limit {soft}" in caplog.text
    caplog.clear()
    huge = replace(cfg, relay=replace(cfg.relay, http_max_connections=soft + 1))
    with caplog.at_level(logging.INFO, logger="berrylive"):
        cli.raise_fd_limit(huge)
    assert "below what the connection caps need" in caplog.text
