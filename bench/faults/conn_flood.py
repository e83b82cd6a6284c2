"""Drill 6: 10 000 idle or byte-a-second connections on the RTMP port and on the HTTP port.

Promised: the server's memory stays bounded (caps on connections in total and per
address, deadlines on the RTMP handshake and the HTTP request head: a byte a second does
not keep a connection); viewers already watching and buyers on connections they already
hold are unaffected; and *new* connections of real users get through while the flood
holds a port's total cap (the cap closes the oldest connection that has not finished its
handshake / request head to make room).

Driven: one ``berrylive serve`` (file-descriptor limit raised for it and for this load
generator), an ffmpeg anchor, a flash sale; then, per phase, ``--conns`` attacking
connections from ``--addrs`` loopback addresses (127.1.x.y), opened over a few seconds
and reopened whenever the server closes them (as an attacker would), either silent
(``idle``) or sending one byte a second of an RTMP handshake / HTTP request head
(``trickle``), for ``--seconds``; all along: the server's RSS, an HTTP-FLV viewer
connected before, a new HTTP-FLV viewer every 2 s, an RTMP handshake every second, buys
on kept-alive connections (20/s) and buys on new connections (5/s), each from addresses
of their own (127.0.1.x).

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.conn_flood
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.faults.harness import (
    Buyers,
    Node,
    api,
    buy,
    clean_env,
    create_broadcast_sale,
    login,
    rss_mb,
    wait_for,
)
from bench.faults.origin_failover import Viewer
from tests.mediautil import make_clip, start_publisher, stop

HTTP_HEAD = b"GET /live/x.flv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 64 + b"\r\n\r\n"
RTMP_C0C1 = b"\x03" + bytes(1536)


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return limits[0]
        except (ValueError, OSError):
            continue
    return soft


@dataclass
class FloodStats:
    opened: int = 0
    open_now: int = 0
    open_max: int = 0
    closed_by_server: int = 0
    connect_failed: int = 0


async def attacker(
    port: int, src: str, payload: bytes, trickle: bool, stop_at: float, st: FloodStats, delay: float
) -> None:
    """One attacking connection, reopened whenever the server closes it. Cheap on purpose
    (no timer per read): idle waits for the EOF; trickle writes a byte a second and looks
    whether the server closed meanwhile."""
    await asyncio.sleep(delay)
    while time.monotonic() < stop_at:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 5
            )
        except (TimeoutError, OSError):  # (TimeoutError first: an OSError)
            st.connect_failed += 1
            await asyncio.sleep(1 + random.random())
            continue
        st.opened += 1
        st.open_now += 1
        st.open_max = max(st.open_max, st.open_now)
        try:
            if trickle:
                sent = 0
                while time.monotonic() < stop_at and not (r.at_eof() or w.is_closing()):
                    if sent < len(payload):
                        w.write(payload[sent : sent + 1])
                        sent += 1
                    await asyncio.sleep(1.0)
                    if r.at_eof() or r._buffer:  # type: ignore[attr-defined]
                        r._buffer.clear()  # type: ignore[attr-defined]  # answers: dropped
                closed = r.at_eof() or w.is_closing()
            else:
                left = stop_at - time.monotonic()
                try:
                    while await asyncio.wait_for(r.read(65536), max(0.1, left)):
                        left = stop_at - time.monotonic()
                    closed = True
                except TimeoutError:
                    closed = False
            if closed:
                st.closed_by_server += 1
        except (OSError, RuntimeError):  # reset; uvloop: a write on a closed transport
            st.closed_by_server += 1
        finally:
            st.open_now -= 1
            w.close()
        await asyncio.sleep(0.5 + random.random())  # and again


async def attack(
    port: int, mode: str, payload: bytes, conns: int, addrs: int, seconds: float
) -> dict[str, int]:
    """The attack of one phase (run in a process of its own: ``--attack``)."""
    st = FloodStats()
    stop_at = time.monotonic() + seconds
    ramp = min(5.0, seconds / 3)
    sources = [f"127.1.{1 + i // 250}.{1 + i % 250}" for i in range(addrs)]
    await asyncio.gather(
        *(
            attacker(port, sources[i % addrs], payload, mode == "trickle", stop_at, st,
                     ramp * i / conns)
            for i in range(conns)
        )
    )  # fmt: skip
    return {
        "attack_open_max_client_view": st.open_max,
        "attack_opened": st.opened,
        "attack_closed_by_server": st.closed_by_server,
        "attack_connect_failed": st.connect_failed,
    }


@dataclass
class Probes:
    """What real users get during a phase."""

    new_viewers: list[float | None] = field(default_factory=list)
    """Seconds to the first video frame of each new HTTP-FLV viewer (None: none in 10 s)."""
    rtmp_handshakes: list[float | None] = field(default_factory=list)
    new_conn_buys: list[tuple[int, float]] = field(default_factory=list)


async def new_viewer(session: aiohttp.ClientSession, url: str) -> float | None:
    t0 = time.perf_counter()
    v = Viewer(session, url)
    try:
        await wait_for(lambda: v.video() or v.ended, 10, "a frame", 0.02)
    except AssertionError:
        return None
    finally:
        await v.close()
    return round(time.perf_counter() - t0, 3) if v.video() else None


async def rtmp_handshake(port: int, src: str) -> float | None:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(10):
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
            try:
                w.write(RTMP_C0C1)
                await r.readexactly(1 + 1536 + 1536)  # S0 S1 S2
            finally:
                w.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    return round(time.perf_counter() - t0, 3)


async def probe_loop(
    node: Node, sale_id: int, flv_url: str, stop_at: float, pr: Probes, tag: int
) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.200", 0), force_close=True)
    ) as session:
        n = 0

        async def viewers() -> None:
            while time.monotonic() < stop_at:
                pr.new_viewers.append(await new_viewer(session, flv_url))
                await asyncio.sleep(2)

        async def handshakes() -> None:
            while time.monotonic() < stop_at:
                pr.rtmp_handshakes.append(await rtmp_handshake(node.rtmp_port, "127.0.0.201"))
                await asyncio.sleep(1)

        async def buys() -> None:
            nonlocal n
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(10):
                        conn = await asyncio.open_connection(
                            "127.0.0.1", node.http_port, local_addr=("127.0.0.202", 0)
                        )
                        try:
                            ans = await buy(conn, node.secret(), sale_id, f"new{tag}-{n}", "k")
                        finally:
                            conn[1].close()
                    status = ans.status
                except (TimeoutError, OSError):
                    status = -1
                n += 1
                pr.new_conn_buys.append((status, round(time.perf_counter() - t0, 4)))
                await asyncio.sleep(0.2)

        await asyncio.gather(viewers(), handshakes(), buys())


def _repo_path() -> str:
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1)


async def phase(
    node: Node,
    token: str,
    sale_id: int,
    flv_url: str,
    watcher: Viewer,
    port_name: str,
    mode: str,
    conns: int,
    addrs: int,
    seconds: float,
    tag: int,
) -> dict[str, Any]:
    port = node.rtmp_port if port_name == "rtmp" else node.http_port
    pr = Probes()
    base_rss = rss_mb(node.proc.pid)  # type: ignore[union-attr]
    frames0 = len(watcher.video())
    stop_at = time.monotonic() + seconds
    keep = Buyers(node.http_port, node.secret(), sale_id, 20, 4, seconds)
    keep.run = f"keep{tag}"
    buying = keep.start()
    # the attackers in a process of their own: their work does not delay the probes here
    attacking = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.faults.conn_flood", "--attack", f"{port}:{port_name}:{mode}",
        "--conns", str(conns), "--addrs", str(addrs), "--seconds", str(seconds),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": _repo_path()},
    )  # fmt: skip
    probing = asyncio.ensure_future(probe_loop(node, sale_id, flv_url, stop_at, pr, tag))
    rss_max = base_rss
    while time.monotonic() < stop_at:
        await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):
            rss_max = max(rss_max, rss_mb(node.proc.pid))  # type: ignore[union-attr]
    out, _ = await attacking.communicate()
    stats = json.loads(out.decode().strip().splitlines()[-1]) if conns else {}
    await probing
    await buying
    frames = len(watcher.video()) - frames0
    keep_ok = [a.latency for a in keep.answers if a.status == 201]
    new_ok = [lat for s, lat in pr.new_conn_buys if s == 201]
    return {
        "port": port_name,
        "mode": mode,
        "attack_conns": conns,
        "attack_addrs": addrs,
        "seconds": seconds,
        **stats,
        "server_rss_mb_before": base_rss,
        "server_rss_mb_max": rss_max,
        "existing_viewer_frames": frames,
        "existing_viewer_fps": round(frames / seconds, 1),
        "existing_viewer_ended": watcher.ended,
        "keepalive_buys": len(keep.answers),
        "keepalive_buys_ok": len(keep_ok),
        "keepalive_buy_p50_ms": pct(keep_ok, 0.5),
        "keepalive_buy_p99_ms": pct(keep_ok, 0.99),
        "new_conn_buys": len(pr.new_conn_buys),
        "new_conn_buys_ok": len(new_ok),
        "new_conn_buy_statuses": dict(Counter(str(st) for st, _ in pr.new_conn_buys)),
        "new_conn_buy_p50_ms": pct(new_ok, 0.5),
        "new_conn_buy_p99_ms": pct(new_ok, 0.99),
        "new_viewers": len(pr.new_viewers),
        "new_viewers_ok": sum(v is not None for v in pr.new_viewers),
        "new_viewer_first_frame_p50_ms": pct([v for v in pr.new_viewers if v is not None], 0.5),
        "rtmp_handshakes": len(pr.rtmp_handshakes),
        "rtmp_handshakes_ok": sum(v is not None for v in pr.rtmp_handshakes),
    }


async def drill(
    root: Path,
    clip: Path,
    conns: int = 10_000,
    addrs: int = 100,
    seconds: float = 20.0,
    phases: tuple[tuple[str, str], ...] = (
        ("rtmp", "idle"),
        ("rtmp", "trickle"),
        ("http", "idle"),
        ("http", "trickle"),
    ),
    server_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    fds = raise_fd_limit(2 * conns + 4096)  # the server inherits it and raises its own
    root = root.resolve()
    node = Node(root / "data", clean_env(**(server_env or {})))
    await node.add_operator()
    await node.start()
    out: dict[str, Any] = {"drill": "conn_flood", "loadgen_fd_limit": fds, "phases": []}
    publisher = None
    try:
        token = await login(node)
        bid, sale_id = await create_broadcast_sale(node, token, 100_000, limit=1)
        push = (await api(node, token, "GET", f"/api/broadcasts/{bid}/push"))["url"]
        push = re.sub(r"rtmp://[^/]+/", f"rtmp://127.0.0.1:{node.rtmp_port}/", push)
        app, stream = push.split("?")[0].rsplit("/", 2)[-2:]
        publisher = await start_publisher(push, clip, loop=True)
        flv_url = f"{node.url}/{app}/{stream}.flv"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.199", 0))
        ) as session:

            async def live() -> bool:
                b = await api(node, token, "GET", f"/api/broadcasts/{bid}")
                return bool(b["state"] == "live")

            await wait_for(live, 30, "the broadcast to go live")
            watcher = Viewer(session, flv_url)
            try:
                await wait_for(lambda: len(watcher.video()) > 30, 30, "the watching viewer")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {watcher.ended}") from None
            # a baseline without attack, then each phase
            out["baseline"] = await phase(
                node, token, sale_id, flv_url, watcher, "http", "none", 0, 1, min(8.0, seconds), 0
            )
            for i, (port, mode) in enumerate(phases, 1):
                out["phases"].append(
                    await phase(
                        node, token, sale_id, flv_url, watcher, port, mode, conns, addrs,
                        seconds, i,
                    )
                )  # fmt: skip
                await asyncio.sleep(2)  # the server closes what is left
            await watcher.close()
        code = await node.terminate()
        out["exit_code_after"] = code
    finally:
        if publisher is not None:
            await stop(publisher)
        await node.kill()
    failures = []
    for ph in out["phases"]:
        name = f"{ph['port']}/{ph['mode']}"
        if ph["existing_viewer_ended"]:
            failures.append(f"{name}: the watching viewer was cut")
        if ph["keepalive_buys_ok"] < ph["keepalive_buys"]:
            failures.append(f"{name}: buys on kept-alive connections failed")
        if ph["existing_viewer_fps"] < 0.5 * out["baseline"]["existing_viewer_fps"]:
            failures.append(f"{name}: the watching viewer's frame rate halved")
        # new connections of real users: the caps close the oldest unfinished handshakes /
        # request heads to make room for them (RtmpServer.pending, http_guard.Admission)
        for what, total, ok in (
            ("new viewers", "new_viewers", "new_viewers_ok"),
            ("new RTMP handshakes", "rtmp_handshakes", "rtmp_handshakes_ok"),
            ("buys on new connections", "new_conn_buys", "new_conn_buys_ok"),
        ):
            if ph[ok] < ph[total]:
                failures.append(f"{name}: {ph[total] - ph[ok]} of {ph[total]} {what} failed")
    out["failures"] = failures
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument("--addrs", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--attack", default="", help=argparse.SUPPRESS)  # PORT:rtmp|http:MODE
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if a.attack:  # the attacking process of one phase
        raise_fd_limit(a.conns + 1024)
        port, kind, mode = a.attack.split(":")
        payload = RTMP_C0C1 if kind == "rtmp" else HTTP_HEAD
        stats = asyncio.run(attack(int(port), mode, payload, a.conns, a.addrs, a.seconds))
        print(json.dumps(stats), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="berrylive-drill-") as tmp:
        clip = make_clip(Path(tmp) / "clip.flv", 6.0, gop=30)
        figures = asyncio.run(drill(Path(tmp) / "run", clip, a.conns, a.addrs, a.seconds))
    print(json.dumps(figures))
    sys.exit(1 if figures["failures"] else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
