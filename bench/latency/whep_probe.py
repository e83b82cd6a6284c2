"""WHEP probe viewers: read the publisher's wall-clock stamps back out of WebRTC playback.

Each probe is bench/webrtc/loadgen.py's light WHEP viewer (hand-written recvonly offer,
ICE check, DTLS as client with the product's ``core.rtc.dtls`` pieces, SRTP unprotect with
pylibsrtp) whose unprotected H.264 RTP packets go through the product's RTP depacketizer
(media/rtp/h264_depacketize.py); for every access unit carrying the SEI stamp of
bench/latency/stamp.py it records ``now - stamp`` at the moment the packet completing the
unit was unprotected (no jitter buffer, no decoder: what the server adds, plus the
publisher's socket and the loopback). Audio (Opus, transcoded by the server from AAC) is
counted by the viewer but not timed: its RTP time has no stamp to anchor it.

Two times per frame: ``whep`` uses the kernel's receive time of the datagram completing
the unit (the ``SIOCGSTAMP`` ioctl after each read), so
a probe process that falls behind its sockets (hundreds of viewers in one Python process)
does not count its own backlog; ``whep-read`` is the time the probe read it, as the
HTTP-FLV and RTMP probes time theirs. Where the kernel gives no time, both are the read time.

Used by bench/latency/probe.py (``--whep URL --whep-probes N``).
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import time
from typing import Any

import aiohttp

from bench.latency.stamp import read_stamp_nalus
from bench.webrtc.loadgen import VIDEO_PT, WhepViewer
from core.rtc.dtls import DtlsCertificate, DtlsContexts
from media.rtp.h264_depacketize import H264Depacketizer

Samples = list[tuple[float, float]]

SIOCGSTAMP = 0x8906  # linux/sockios.h: the receive time of the last datagram read
_TIMEVAL = struct.Struct("@ll")


def enable_rx_times(sock: socket.socket) -> None:
    """Make the kernel keep each read datagram's receive time for :func:`kernel_rx_time`:
    the first ``SIOCGSTAMP`` turns it on (and answers with its own time, or ENOENT). Not
    ``SO_TIMESTAMP``: with it the time goes to ancillary data only and the ioctl fails.
    The kernel turns the times on through deferred work, so the first few datagrams may
    still be answered with the ioctl's own time (the read time: a frame or two of the join
    GOP, inside the skipped first seconds)."""
    kernel_rx_time(sock)


def kernel_rx_time(sock: socket.socket) -> float | None:
    """The kernel's receive time (s since the epoch) of the datagram last read from ``sock``
    (after :func:`enable_rx_times`), or None."""
    try:
        sec, usec = _TIMEVAL.unpack(fcntl.ioctl(sock.fileno(), SIOCGSTAMP, bytes(_TIMEVAL.size)))
    except OSError:
        return None
    return float(sec + usec / 1e6)


class StampTimer:
    """Access units in, ``(time_s, time - stamp in ms)`` samples out, from ``skip`` s after
    the viewer's first unit arrived (the GOP cache sent at join is old by design; counted
    from the first unit, not from the start, since a viewer may connect late and a probe
    that fell behind reads the join burst late)."""

    def __init__(self, skip: float, video: Samples, read: Samples | None = None) -> None:
        self.started: float | None = None
        """The arrival time of the first unit."""
        self.skip = skip
        self.video = video
        """Samples at the kernel's receive time (the read time when there is none)."""
        self.read = read
        """Samples at the time the probe read the datagram."""
        self.units = 0
        self.stamped = 0
        self.rtp_lost = 0
        """Video RTP packets the depacketizer gave up as lost (set by the viewer)."""
        self.units_dropped = 0

    def unit(
        self, nalus: tuple[bytes, ...], wall: float | None = None, rx: float | None = None
    ) -> None:
        """One access unit, read at ``wall``, received by the kernel at ``rx``."""
        if wall is None:
            wall = time.time()
        self.units += 1
        stamp_us = read_stamp_nalus(nalus)
        if stamp_us is None:
            return
        self.stamped += 1
        at = wall if rx is None else rx
        if self.started is None:
            self.started = at
        if at - self.started < self.skip:
            return
        sent_ms = stamp_us / 1000
        self.video.append((round(at, 3), round(at * 1000 - sent_ms, 3)))
        if self.read is not None:
            self.read.append((round(wall, 3), round(wall * 1000 - sent_ms, 3)))


class StampViewer(WhepViewer):
    """A light WHEP viewer that depacketizes its video and times each stamped frame."""

    def __init__(self, contexts: DtlsContexts, fingerprint: str, timer: StampTimer) -> None:
        super().__init__(contexts, fingerprint)
        self.timer = timer
        self.depacketizer = H264Depacketizer()
        self.sock: socket.socket | None = None
        self.rx: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            enable_rx_times(sock)
            self.sock = sock

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rx = kernel_rx_time(self.sock) if self.sock is not None else None
        super().datagram_received(data, addr)

    def _seq(self, plain: bytes) -> None:
        # WhepViewer hands every unprotected RTP packet to _seq (its loss count): the one
        # place a subclass sees the plain packet.
        super()._seq(plain)
        if plain[1] & 0x7F == VIDEO_PT:
            wall = time.time()
            for au in self.depacketizer.receive(plain):
                self.timer.unit(au.nalus, wall, self.rx)
            stats = self.depacketizer.stats
            self.timer.rtp_lost = stats.lost
            self.timer.units_dropped = stats.dropped_units


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
