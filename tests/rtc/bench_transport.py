"""Transport micro-benchmark (not a test; pytest does not collect it): CPU per ICE + DTLS
handshake, per ``send_rtp`` and per packet of ``send_rtp_batch``, on loopback.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m tests.rtc.bench_transport 50

N plain peers connect to one endpoint (peer and server in this one process: the
handshake figure covers both sides), then stop reading; the server sends 1200-byte RTP
packets to all of them for 5 s per send style. CPU is this process's (getrusage), packet
building included; the figures are an upper bound of the transport's share.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

from core.rtc import RtcEndpoint, RtcSession, WebRtcConfig
from tests.rtc.peer import PlainPeer, rtp_packet

WINDOW = 5.0
PAYLOAD = bytes(1188)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _video_ssrc(session: RtcSession) -> int:
    assert session.video is not None
    return session.video.local_ssrc


async def main(n: int) -> None:
    endpoint = RtcEndpoint(WebRtcConfig(udp_port=0, host="127.0.0.1", consent_timeout=600))
    await endpoint.start()
    try:
        peers = [PlainPeer(direction="recvonly") for _ in range(n)]
        sessions = []
        for peer in peers:
            await peer.open()
            session = endpoint.open_session(peer.offer(), direction="sendonly")
            peer.use_answer(session.answer_sdp)
            sessions.append(session)
        cpu0, wall0 = _cpu(), time.perf_counter()
        await asyncio.gather(*[peer.connect() for peer in peers])
        print(
            f"{n} ICE + DTLS handshakes: {(_cpu() - cpu0) / n * 1000:.2f} ms CPU each "
            f"(both sides), {time.perf_counter() - wall0:.2f} s for all"
        )
        for peer in peers:
            assert peer.transport is not None
            peer.transport.pause_reading()
        seqs = [0] * n
        for style in ("send_rtp", "send_rtp_batch"):
            sent = 0
            cpu0, wall0 = _cpu(), time.perf_counter()
            while time.perf_counter() - wall0 < WINDOW:
                for i, session in enumerate(sessions):
                    ssrc = _video_ssrc(session)
                    for _ in range(3):  # three 7-packet frames per viewer per turn
                        frame = [
                            rtp_packet(96, (seqs[i] + k) & 0xFFFF, 0, ssrc, PAYLOAD)
                            for k in range(7)
                        ]
                        seqs[i] += 7
                        if style == "send_rtp":
                            sent += sum(session.send_rtp(p) for p in frame)
                        else:
                            sent += session.send_rtp_batch(frame)
                await asyncio.sleep(0)
            cpu = _cpu() - cpu0
            per_packet = cpu / max(sent, 1) * 1e6
            print(
                f"{style}: {sent} packets of 1200 B, {per_packet:.2f} us CPU per packet, "
                f"{per_packet * 210:.0f} us per viewer-second of a 2 Mb/s stream (210 pkt/s)"
            )
        drops = sum(s.stats["drops_out"] for s in sessions)
        print(f"drops {drops}, UDP GSO sends {endpoint.stats['gso_sends']}")
        for peer in peers:
            peer.vanish()
    finally:
        await endpoint.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
