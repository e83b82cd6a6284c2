"""Probe viewers that read the publisher's wall-clock stamps back (one process).

    python -m bench.latency.probe --flv http://127.0.0.1:8080/live/bench.flv --flv-probes 4 \\
        --rtmp rtmp://127.0.0.1:1935/live/bench --rtmp-probes 4 \\
        --whep http://127.0.0.1:8080/whep/live/bench --whep-probes 4 \\
        --hls http://127.0.0.1:8080/live/bench.m3u8 --hls-probes 4

Each probe plays the stream (HTTP-FLV: response head, chunked framing if any, FLV tags;
RTMP: handshake, connect, createStream, play, via media.rtmp.client; WHEP: ICE, DTLS, SRTP
and RTP depacketizing, see bench/latency/whep_probe.py; LL-HLS: blocking playlist reloads,
preload-hinted parts, fMP4 parsing, see bench/latency/hls_probe.py) and, for every video
frame carrying a stamp (bench/latency/stamp.py), records ``now - stamp`` at the moment the
bytes completing the frame were read; audio frames are timed too (see :class:`Clock`).
Samples from the first ``--skip`` seconds of each probe are dropped (the GOP cache a
server sends at join is old by design). Runs until its stdin closes, then prints one JSON
line: ``{"samples": {"flv": [[wall_s, ms], ...], "flv-audio": ..., "rtmp": ..., "whep": ...},
"errors": [...], "cpu_pct": ..., "whep": {"units", "stamped", "rtp_lost", "units_dropped"},
"hls": {"parts", "stamped", "hints_missed", ...}}`` (WHEP: video only, ``whep`` the totals
over its probes; LL-HLS: video only, ``hls`` at each part's last byte and ``hls-first`` at
its response head, ``hls`` the totals over its probes; ``cpu_pct``: this process's CPU over
its run, near 100 when the probes themselves are the bottleneck and add their own queueing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from bench.latency.hls_probe import HlsTimer, hls_probe
from bench.latency.stamp import read_stamp
from bench.latency.whep_probe import StampTimer, whep_probe
from core.rtc.dtls import DtlsCertificate, DtlsContexts
from media import flv
from media.rtmp import chunk as C
from media.rtmp.client import ClientConnection, ClientError, CommandReply, MediaMessage

Samples = list[tuple[float, float]]


class Clock:
    """One probe's receive clock. Video frames carry their send time (the stamp); an audio
    frame's send time is the publisher's clock at media time 0 plus its timestamp, the
    former estimated from the video frames as ``min(stamp - timestamp)`` (the publisher
    sends each frame when its time comes, never before)."""

    def __init__(self, skip: float, video: Samples, audio: Samples) -> None:
        self.started = time.time()
        self.skip = skip
        self.video = video
        self.audio = audio
        self.base_ms: float | None = None

    def frame(self, kind: int, timestamp: int, body: bytes) -> None:
        wall = time.time()
        now_ms = wall * 1000
        if kind == 9:
            stamp = read_stamp(body)
            if stamp is None:
                return
            sent_ms = stamp / 1000
            base = sent_ms - timestamp
            if self.base_ms is None or base < self.base_ms:
                self.base_ms = base
        elif kind == 8 and self.base_ms is not None:
            sent_ms = self.base_ms + timestamp
        else:
            return
        if wall - self.started >= self.skip:
            (self.video if kind == 9 else self.audio).append(
                (round(wall, 3), round(now_ms - sent_ms, 3))
            )


class Dechunker:
    """HTTP/1.1 chunked transfer coding, incrementally."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0  # bytes of the current chunk still to come; -2: its CRLF
        self.ended = False  # the last (empty) chunk came: the rest is the trailer

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        self.buf += data
        out = bytearray()
        while self.buf:
            if self.left < 0:  # the CRLF after a chunk's data
                if len(self.buf) < 2:
                    break
                del self.buf[:2]
                self.left = 0
                continue
            if self.left:
                take = min(self.left, len(self.buf))
                out += self.buf[:take]
                del self.buf[:take]
                self.left -= take
                if self.left == 0:
                    self.left = -2
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(self.buf[:end]).split(b";")[0], 16)
            del self.buf[: end + 2]
            if size == 0:
                self.ended = True
                self.buf.clear()
                break
            self.left = size
        return bytes(out)


async def flv_probe(url: str, clock: Clock) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"{url}: {head[:80]!r}")
        chunked = b"chunked" in head.lower()
        dechunk = Dechunker() if chunked else None
        demux = flv.FlvDemuxer()
        while data := await reader.read(262144):
            if dechunk is not None:
                data = dechunk.feed(data)
            for tag in demux.feed(data):
                if isinstance(tag, flv.FlvTag):
                    clock.frame(tag.tag_type, tag.timestamp, tag.body)
    finally:
        writer.close()


async def rtmp_probe(url: str, clock: Clock) -> None:
    parts = urlsplit(url)
    app, _, name = parts.path.lstrip("/").partition("/")
    host, port = parts.hostname or "127.0.0.1", parts.port or 1935
    reader, writer = await asyncio.open_connection(host, port)
    client = ClientConnection()
    try:
        client.connect(app, f"rtmp://{host}:{port}/{app}")
        tx_create = client.create_stream()
        writer.write(client.data_to_send())
        while data := await reader.read(262144):
            for ev in client.receive_data(data):
                if isinstance(ev, ClientError):
                    raise ConnectionError(ev.reason)
                if isinstance(ev, MediaMessage):
                    if ev.type_id in (C.VIDEO, C.AUDIO):
                        clock.frame(ev.type_id, ev.timestamp, ev.payload)
                elif (
                    isinstance(ev, CommandReply)
                    and ev.name == "_result"
                    and ev.transaction_id == tx_create
                ):
                    sid = int(next((a for a in ev.args if isinstance(a, int | float)), 1))
                    client.play(sid, name)
            sent = client.data_to_send()
            if sent:
                writer.write(sent)
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, Samples] = {
        "flv": [], "rtmp": [], "flv-audio": [], "rtmp-audio": [], "whep": [], "whep-read": [],
        "hls": [], "hls-first": [],
    }  # fmt: skip
    errors: list[str] = []

    async def guard(coro: Any) -> None:
        try:
            await coro
        except (OSError, ConnectionError, ValueError, RuntimeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    tasks = [
        asyncio.create_task(
            guard(flv_probe(args.flv, Clock(args.skip, samples["flv"], samples["flv-audio"])))
        )
        for _ in range(args.flv_probes)
    ] + [
        asyncio.create_task(
            guard(rtmp_probe(args.rtmp, Clock(args.skip, samples["rtmp"], samples["rtmp-audio"])))
        )
        for _ in range(args.rtmp_probes)
    ]
    timers = [
        StampTimer(args.skip, samples["whep"], samples["whep-read"])
        for _ in range(args.whep_probes)
    ]
    if timers:
        cert = DtlsCertificate.generate()
        contexts = DtlsContexts(cert)
        tasks += [
            asyncio.create_task(guard(whep_probe(args.whep, t, cert, contexts))) for t in timers
        ]
    hls_timers = [
        HlsTimer(args.skip, samples["hls"], samples["hls-first"]) for _ in range(args.hls_probes)
    ]
    tasks += [asyncio.create_task(guard(hls_probe(args.hls, t))) for t in hls_timers]
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    print(json.dumps({"event": "started"}), flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        await asyncio.wait_for(stdin_closed, args.max_seconds)
    except TimeoutError:
        errors.append("ran out of time")
    loop.remove_reader(sys.stdin.fileno())
    cpu_pct = round(100 * (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0), 1)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    whep = {
        k: sum(getattr(t, k) for t in timers)
        for k in ("units", "stamped", "rtp_lost", "units_dropped")
    }
    hls: dict[str, int] = {}
    for ht in hls_timers:
        for k, v in ht.totals().items():
            hls[k] = hls.get(k, 0) + v
    return {"samples": samples, "errors": errors, "cpu_pct": cpu_pct, "whep": whep, "hls": hls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flv", default="")
    ap.add_argument("--rtmp", default="")
    ap.add_argument("--flv-probes", type=int, default=0)
    ap.add_argument("--rtmp-probes", type=int, default=0)
    ap.add_argument("--whep", default="", help="http://HOST:PORT/whep/APP/STREAM")
    ap.add_argument("--whep-probes", type=int, default=0)
    ap.add_argument("--hls", default="", help="http://HOST:PORT/APP/STREAM.m3u8 (LL-HLS)")
    ap.add_argument("--hls-probes", type=int, default=0)
    ap.add_argument("--skip", type=float, default=3.0, help="seconds of samples dropped first")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps({"event": "result", **result}), flush=True)


if __name__ == "__main__":
    main()
