"""Load generator process: N WHEP viewers of one stream, measured over a fixed window.

    python -m bench.webrtc.loadgen --url http://127.0.0.1:8080/whep/live/bench \\
        --viewers 100 --window 20

Each viewer is a light WebRTC client (no decoding, so one process can hold hundreds): it
POSTs a hand-written recvonly offer (H.264 packetization-mode 1 + Opus, BUNDLE,
rtcp-mux, ``a=setup:active``), does the ICE check (full agent, controlling, USE-CANDIDATE)
against the answer's candidate, the DTLS handshake as client (the product's
``core.rtc.dtls`` pieces in the client role), and unprotects every SRTP packet with
pylibsrtp, counting packets and bytes of video and audio. A STUN consent check goes out
every 4 s, as browsers do.

Progress goes to stdout as JSON lines, like :mod:`bench.media.loadgen`:
``{"event": "ready"}``, ``{"event": "measure_start"}``, ``{"event": "measure_end"}``,
``{"event": "result", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import socket
import struct
import sys
import time
from typing import Any

import aiohttp
import pylibsrtp

from core.rtc.dtls import DtlsCertificate, DtlsConnection, DtlsContexts, DtlsError
from media.webrtc import stun

OFFER = """v=0
o=- {sid} 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS
m=video 9 UDP/TLS/RTP/SAVPF 102
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
a=fingerprint:{fingerprint}
a=setup:active
a=mid:0
a=recvonly
a=rtcp-mux
a=rtpmap:102 H264/90000
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
a=fingerprint:{fingerprint}
a=setup:active
a=mid:1
a=recvonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
"""
RCVBUF = 1024 * 1024
VIDEO_PT = 102
AUDIO_PT = 111
CONSENT_EVERY = 4.0


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class WhepViewer(asyncio.DatagramProtocol):
    """One light WHEP viewer."""

    def __init__(self, contexts: DtlsContexts, fingerprint: str) -> None:
        self.contexts = contexts
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(16)
        self.offer = OFFER.format(
            sid=secrets.randbits(60), ufrag=self.ufrag, pwd=self.pwd, fingerprint=fingerprint
        ).replace("\n", "\r\n")
        self.transport: asyncio.DatagramTransport | None = None
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.dtls: DtlsConnection | None = None
        self.srtp: pylibsrtp.Session | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.first_video: float | None = None
        self.started = 0.0
        self.packets = {VIDEO_PT: 0, AUDIO_PT: 0}
        self.octets = {VIDEO_PT: 0, AUDIO_PT: 0}
        self.errors = 0
        self.location = ""
        self.stun_sent = 0
        self.stun_answers = 0
        self.last_answer = 0.0
        self.highest: dict[int, int] = {}
        """Per SSRC, the highest extended sequence number seen (for the loss count)."""
        self.received_by_ssrc: dict[int, int] = {}
        self.first_seq: dict[int, int] = {}

    # ------------------------------------------------------------------ signalling

    async def start(self, http: aiohttp.ClientSession, url: str) -> None:
        self.started = time.monotonic()
        async with http.post(
            url, data=self.offer, headers={"Content-Type": "application/sdp"}
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP {resp.status}: {answer.strip()[:200]}")
            self.location = resp.headers.get("Location", "")
        self.remote_ufrag = re.search(r"a=ice-ufrag:(\S+)", answer)[1]  # type: ignore[index]
        self.remote_pwd = re.search(r"a=ice-pwd:(\S+)", answer)[1]  # type: ignore[index]
        cand = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer)
        if cand is None:
            raise RuntimeError("no host candidate in the answer")
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=(cand[1], int(cand[2])))
        self._check()

    def _check(self, use_candidate: bool = True) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        attrs = [
            (stun.ATTR_USERNAME, f"{self.remote_ufrag}:{self.ufrag}".encode()),
            (stun.ATTR_PRIORITY, struct.pack("!I", 0x6E7F1EFF)),
            (stun.ATTR_ICE_CONTROLLING, secrets.token_bytes(8)),
        ]
        if use_candidate:
            attrs.append((stun.ATTR_USE_CANDIDATE, b""))
        self.stun_sent += 1
        self.transport.sendto(
            stun.build(
                stun.BINDING,
                stun.CLASS_REQUEST,
                secrets.token_bytes(12),
                attrs,
                integrity_key=self.remote_pwd.encode(),
                fingerprint=True,
            )
        )
        asyncio.get_running_loop().call_later(
            CONSENT_EVERY if self.dtls is not None else 0.5, self._check, self.dtls is None
        )

    # ------------------------------------------------------------------ datagrams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # room for a scheduling hiccup of the load generator
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data:
            return
        first = data[0]
        try:
            if first < 4:  # STUN
                self.stun_answers += 1
                self.last_answer = time.monotonic()
                if self.dtls is None:
                    self._start_dtls()
            elif 20 <= first <= 63:
                self._dtls_in(data)
            elif 128 <= first <= 191 and self.srtp is not None:
                if 192 <= data[1] <= 223:
                    return  # SRTCP (sender reports)
                plain = self.srtp.unprotect(data)
                pt = plain[1] & 0x7F
                self._seq(plain)
                if pt in self.packets:
                    self.packets[pt] += 1
                    self.octets[pt] += len(plain)
                    if pt == VIDEO_PT and self.first_video is None:
                        self.first_video = time.monotonic()
        except (DtlsError, pylibsrtp.Error):
            self.errors += 1

    def _seq(self, plain: bytes) -> None:
        ssrc = int.from_bytes(plain[8:12], "big")
        seq = int.from_bytes(plain[2:4], "big")
        high = self.highest.get(ssrc)
        if high is None:
            self.first_seq[ssrc] = seq
            self.highest[ssrc] = seq
        else:
            d = (seq - high) & 0xFFFF
            if 0 < d < 0x8000:
                self.highest[ssrc] = high + d
        self.received_by_ssrc[ssrc] = self.received_by_ssrc.get(ssrc, 0) + 1

    def lost(self) -> tuple[int, int]:
        """(expected, received) over every SSRC so far."""
        expected = sum(self.highest[s] - self.first_seq[s] + 1 for s in self.highest)
        return expected, sum(self.received_by_ssrc.values())

    def _send(self, datagrams: list[bytes]) -> None:
        if self.transport is not None:
            for d in datagrams:
                self.transport.sendto(d)

    def _start_dtls(self) -> None:
        self.dtls = DtlsConnection(self.contexts, "client")
        self._send(self.dtls.start())
        asyncio.get_running_loop().call_later(1.0, self._dtls_timer)

    def _dtls_timer(self) -> None:
        if self.dtls is not None and not self.dtls.handshake_done and not self.connected.done():
            self._send(self.dtls.handle_timeout())
            asyncio.get_running_loop().call_later(0.5, self._dtls_timer)

    def _dtls_in(self, data: bytes) -> None:
        assert self.dtls is not None
        self._send(self.dtls.receive(data))
        if self.dtls.handshake_done and self.srtp is None:
            keys = self.dtls.srtp_keys()
            policy = pylibsrtp.Policy(
                key=keys.rx_key,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=keys.profile,
            )
            policy.window_size = 1024
            self.srtp = pylibsrtp.Session(policy=policy)
            if not self.connected.done():
                self.connected.set_result(True)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


async def _signal(expected: str) -> None:
    """A child process waits for its parent's ``expected`` line on stdin."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == expected:
            return


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """This process's viewers; the raw per-viewer figures (see :func:`summarize`)."""
    cert = DtlsCertificate.generate()
    contexts = DtlsContexts(cert)
    viewers: list[WhepViewer] = []
    failures: list[str] = []
    sem = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            async with sem:
                v = WhepViewer(contexts, cert.fingerprint)
                try:
                    await v.start(http, args.url)
                    await asyncio.wait_for(v.connected, args.settle_timeout)
                    viewers.append(v)
                except Exception as exc:  # counted, reported
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    v.close()

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(args.viewers)))
        deadline = time.monotonic() + args.settle_timeout
        while time.monotonic() < deadline and any(v.first_video is None for v in viewers):
            await asyncio.sleep(0.05)
        emit(
            "ready",
            viewers=len(viewers),
            failures=len(failures),
            setup_s=round(time.monotonic() - t0, 2),
        )
        if args.child:
            await _signal("start")  # every child starts its window together
        else:
            await asyncio.sleep(args.warmup)
        before = [(dict(v.packets), dict(v.octets)) for v in viewers]
        lost0 = [v.lost() for v in viewers]
        own0 = time.process_time()
        emit("measure_start")
        start = time.monotonic()
        await asyncio.sleep(args.window)
        elapsed = time.monotonic() - start
        emit("measure_end")
        own = time.process_time() - own0
        if args.child:
            await _signal("stop")
        else:
            await asyncio.sleep(1.0)  # the driver reads the server's figures before the DELETEs
        after = [(dict(v.packets), dict(v.octets)) for v in viewers]
        lost1 = [v.lost() for v in viewers]
        raw = {
            "viewers": args.viewers,
            "connected": len(viewers),
            "failures": failures,
            "elapsed": elapsed,
            "own_cpu_s": own,
            "expected": sum(b[0] - a[0] for a, b in zip(lost0, lost1, strict=True)),
            "received": sum(b[1] - a[1] for a, b in zip(lost0, lost1, strict=True)),
            "video_bps": [
                8 * (a[1][VIDEO_PT] - b[1][VIDEO_PT]) / elapsed
                for a, b in zip(after, before, strict=True)
            ],
            "audio_pps": [
                (a[0][AUDIO_PT] - b[0][AUDIO_PT]) / elapsed
                for a, b in zip(after, before, strict=True)
            ],
            "first_ms": [1000 * (v.first_video - v.started) for v in viewers if v.first_video],
            "srtp_errors": sum(v.errors for v in viewers),
            "stun_sent": [v.stun_sent for v in viewers],
            "stun_answers": [v.stun_answers for v in viewers],
            "stun_silent_s": [time.monotonic() - v.last_answer for v in viewers],
        }
        for v in viewers:
            if v.location:
                try:
                    base = args.url.split("/whep/")[0]
                    async with http.delete(base + v.location) as resp:
                        await resp.read()
                except aiohttp.ClientError:
                    pass
            v.close()
    return raw


def summarize(raws: list[dict[str, Any]], video_bitrate: float) -> dict[str, Any]:
    """One result from the raw figures of one or more processes (their windows coincide)."""

    def joined(key: str) -> list[Any]:
        return [x for raw in raws for x in raw[key]]

    video_bps, audio_pps, first_ms = joined("video_bps"), joined("audio_pps"), joined("first_ms")
    failures = joined("failures")
    connected = sum(r["connected"] for r in raws)
    expected = sum(r["expected"] for r in raws)
    received = sum(r["received"] for r in raws)
    elapsed = max(r["elapsed"] for r in raws)
    full = [b for b in video_bps if b >= 0.9 * video_bitrate] if video_bitrate else []
    return {
        "viewers": sum(r["viewers"] for r in raws),
        "processes": len(raws),
        "connected": connected,
        "failures": len(failures),
        "failure_samples": failures[:5],
        "window_s": round(elapsed, 2),
        "video_kbps_p50": round((percentile(video_bps, 50) or 0) / 1000, 1),
        "video_kbps_min": round(min(video_bps, default=0) / 1000, 1),
        "audio_pps_p50": round(percentile(audio_pps, 50) or 0, 1),
        "full_rate_share": round(len(full) / max(1, connected), 3) if video_bitrate else None,
        "first_video_ms_p50": round(percentile(first_ms, 50) or 0, 1),
        "first_video_ms_p99": round(percentile(first_ms, 99) or 0, 1),
        "srtp_errors": sum(r["srtp_errors"] for r in raws),
        "stun_sent_min": min(joined("stun_sent"), default=0),
        "stun_answers_min": min(joined("stun_answers"), default=0),
        "stun_answers_max": max(joined("stun_answers"), default=0),
        "stun_silent_s_max": round(max(joined("stun_silent_s"), default=0), 1),
        "loss_pct": round(100 * (1 - received / expected), 2) if expected else None,
        "loadgen_cpu_pct": round(100 * sum(r["own_cpu_s"] for r in raws) / elapsed, 1),
    }


async def run_children(args: argparse.Namespace) -> dict[str, Any]:
    """``--procs K``: K child processes share the viewers; their windows start together
    (this process emits the same events as one generator, over the children's window)."""
    shares = [
        args.viewers // args.procs + (i < args.viewers % args.procs) for i in range(args.procs)
    ]
    argv = [
        "--url", args.url, "--window", str(args.window), "--settle-timeout",
        str(args.settle_timeout), "--concurrency", str(args.concurrency), "--child",
    ]  # fmt: skip
    children = []
    for n in shares:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.webrtc.loadgen", *argv, "--viewers", str(n),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        children.append(child)

    async def until(child: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
        assert child.stdout is not None
        while True:
            line = await asyncio.wait_for(child.stdout.readline(), args.settle_timeout * 4 + 60)
            if not line:
                raise RuntimeError(f"a load generator child ended before {event!r}")
            ev: dict[str, Any] = json.loads(line)
            if ev["event"] == event:
                return ev

    def tell(line: str) -> None:
        for child in children:
            assert child.stdin is not None
            child.stdin.write(line.encode() + b"\n")

    try:
        t0 = time.monotonic()
        ready = await asyncio.gather(*(until(c, "ready") for c in children))
        emit(
            "ready",
            viewers=sum(r["viewers"] for r in ready),
            failures=sum(r["failures"] for r in ready),
            setup_s=round(time.monotonic() - t0, 2),
        )
        await asyncio.sleep(args.warmup)
        tell("start")
        await asyncio.gather(*(until(c, "measure_start") for c in children))
        emit("measure_start")
        await asyncio.gather(*(until(c, "measure_end") for c in children))
        emit("measure_end")
        await asyncio.sleep(1.0)  # the driver reads the server's figures before the DELETEs
        tell("stop")
        raws = [(await until(c, "raw"))["raw"] for c in children]
    finally:
        for child in children:
            if child.returncode is None:
                try:
                    await asyncio.wait_for(child.wait(), 30)
                except TimeoutError:
                    child.kill()
    return summarize(raws, args.video_bitrate)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="http://HOST:PORT/whep/APP/STREAM")
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--settle-timeout", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--video-bitrate", type=float, default=0.0, help="bits/s, for the 90%% share")
    p.add_argument(
        "--procs", type=int, default=1, help="processes to share the viewers (one per core)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft
    os.environ.setdefault("PYTHONASYNCIODEBUG", "0")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    if args.procs > 1:
        emit("result", **runner(run_children(args)))
    elif args.child:
        emit("raw", raw=runner(run(args)))
    else:
        emit("result", **summarize([runner(run(args))], args.video_bitrate))


if __name__ == "__main__":
    main()
