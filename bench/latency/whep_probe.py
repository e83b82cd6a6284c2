"""WHEP probe viewers: read the publisher's wall-clock stamps back out of WebRTC playback.

Each probe is bench/webrtc/loadgen.py's light WHEP viewer (hand-written recvonly offer,
ICE check, DTLS as client with the product's ``core.rtc.dtls`` pieces, SRTP unprotect with
pylibsrtp) whose unprotected H.264 RTP packets go through the product's RTP depacketizer
(media/rtp/h264_depacketize.py); for every access unit carrying the SEI stamp of
bench/latency/stamp.py it records ``now - stamp`` at the moment the packet completing the
unit was unprotected (no jitter buffer, no decoder: what the server adds, plus the
publisher's socket and the loopback). Audio (Opus, transcoded by the server from AAC) is
counted by the viewer but not timed: its RTP time has no stamp to anchor it.

Used by bench/latency/probe.py (``--whep URL --whep-probes N``).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.latency.stamp import read_stamp_nalus
from bench.webrtc.loadgen import VIDEO_PT, WhepViewer
from core.rtc.dtls import DtlsCertificate, DtlsContexts
from media.rtp.h264_depacketize import H264Depacketizer

Samples = list[tuple[float, float]]


class StampTimer:
    """Access units in, ``(wall_s, now - stamp in ms)`` samples out, after ``skip`` s."""

    def __init__(self, skip: float, video: Samples) -> None:
        self.started = time.time()
        self.skip = skip
        self.video = video
        self.units = 0
        self.stamped = 0

    def unit(self, nalus: tuple[bytes, ...], wall: float | None = None) -> None:
        if wall is None:
            wall = time.time()
        self.units += 1
        stamp_us = read_stamp_nalus(nalus)
        if stamp_us is None:
            return
        self.stamped += 1
        if wall - self.started >= self.skip:
            self.video.append((round(wall, 3), round(wall * 1000 - stamp_us / 1000, 3)))


class StampViewer(WhepViewer):
    """A light WHEP viewer that depacketizes its video and times each stamped frame."""

    def __init__(self, contexts: DtlsContexts, fingerprint: str, timer: StampTimer) -> None:
        super().__init__(contexts, fingerprint)
        self.timer = timer
        self.depacketizer = H264Depacketizer()

    def _seq(self, plain: bytes) -> None:
        # WhepViewer hands every unprotected RTP packet to _seq (its loss count): the one
        # place a subclass sees the plain packet.
        super()._seq(plain)
        if plain[1] & 0x7F == VIDEO_PT:
            for au in self.depacketizer.receive(plain):
                self.timer.unit(au.nalus)


async def whep_probe(
    url: str, timer: StampTimer, cert: DtlsCertificate, contexts: DtlsContexts
) -> None:
    """One WHEP viewer of ``url`` until cancelled; DELETEs its session on the way out."""
    async with aiohttp.ClientSession() as http:
        viewer = StampViewer(contexts, cert.fingerprint, timer)
        try:
            await viewer.start(http, url)
            await asyncio.wait_for(viewer.connected, 30)
            await asyncio.Event().wait()  # until cancelled
        finally:
            viewer.close()
            if viewer.location:
                base = url.split("/whep/")[0]
                try:
                    async with asyncio.timeout(5):
                        async with http.delete(base + viewer.location) as resp:
                            await resp.read()
                except (TimeoutError, aiohttp.ClientError):
                    pass
