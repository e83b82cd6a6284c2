"""aiortc as a WHIP publisher (its own H.264 and Opus encoders), through a lossy network.

The network is the outside world, so it is a real UDP relay here: the answer's candidate
is pointed at it, and it forwards every datagram both ways except a burst of the
publisher's video RTP packets that it drops.

* ``nack``: berrylive NACKs the missing packets, aiortc resends them (RTX), nothing is lost;
* ``pli``: the relay also drops every resend, so the hole stays: the damaged pictures never
  reach a viewer (an HTTP-FLV reader decodes every frame it gets without an error),
  berrylive asks for a keyframe (PLI; aiortc answers it) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

import aiohttp
import pytest
from aiortc import (
    AudioStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)

from ingest import auth
from ingest.whip import WHIP_SERVER
from relay.http import REGISTRY
from tests.conftest import TEST_SECRET
from tests.ingest.test_whip_media import read_stream
from tests.mediautil import wait_for


class LossyRelay(asyncio.DatagramProtocol):
    """Forwards a client's datagrams to ``target`` and the answers back; drops the next
    ``drop`` RTP packets of payload type ``pt`` from the client once armed, and with
    ``hard`` every resend of them too (in place or on ``rtx_pt``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.pt: int | None = None
        self.rtx_pt: int | None = None
        self.hard = False
        self.drop = 0
        self.dropped = 0
        self.forwarded = 0
        self.lost_seqs: set[int] = set()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.target:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        is_rtp = len(data) > 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
        pt, seq = data[1] & 0x7F, int.from_bytes(data[2:4], "big")
        if is_rtp and pt == self.pt and (self.drop > 0 or (self.hard and seq in self.lost_seqs)):
            self.drop = max(0, self.drop - 1)
            self.lost_seqs.add(seq)
            self.dropped += 1
            return
        if is_rtp and self.hard and self.lost_seqs and pt == self.rtx_pt:
            self.dropped += 1
            return
        self.forwarded += 1
        self.transport.sendto(data, self.target)


@pytest.mark.parametrize("repair", ["nack", "pli"])
async def test_aiortc_publishes_through_loss_and_recovers(server_factory, repair: str) -> None:
    server = await server_factory(webrtc={"udp_port": 0})
    loop = asyncio.get_running_loop()
    endpoint = server.app[WHIP_SERVER].endpoint
    assert endpoint is not None
    transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(("127.0.0.1", endpoint.port)), local_addr=("127.0.0.1", 0)
    )
    relay_port = transport.get_extra_info("sockname")[1]
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        tok = auth.push_query(TEST_SECRET, "live", "ai", int(time.time()) + 600)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{server.http_url}/whip/live/ai",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.text()
        # the network in between: every candidate of ours now points at the relay
        answer = re.sub(
            r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )\d+", rf"\g<1>{relay_port}", answer
        )
        (publish,) = server.app[WHIP_SERVER].sessions.values()
        assert publish.video_pt is not None
        relay.pt = publish.video_pt
        relay.rtx_pt = publish.rtc.video.rtx_payload_type if publish.rtc.video else None
        relay.hard = repair == "pli"
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await wait_for(
            lambda: (
                (h := server.app[REGISTRY].get("live", "ai")) is not None
                and h.live
                and h.audio_header is not None
            ),
            timeout=30,
        )
        hub = server.app[REGISTRY].get("live", "ai")
        await wait_for(lambda: publish.video_frames >= 15, timeout=30)
        reader = asyncio.create_task(
            asyncio.to_thread(read_stream, f"{server.http_url}/live/ai.flv", 120, 60)
        )
        await wait_for(lambda: hub.audience > 0, timeout=15)
        keyframes_before = publish.keyframes
        plis_before = publish.plis
        relay.drop = 3  # a burst inside the next picture(s)
        await wait_for(lambda: relay.drop == 0, timeout=15)
        if repair == "nack":
            await wait_for(lambda: publish.retransmissions >= 3, timeout=15)
        else:
            await wait_for(lambda: publish.plis > plis_before, timeout=15)
            await wait_for(lambda: publish.keyframes > keyframes_before, timeout=30)
        got = await reader
    finally:
        await pc.close()
        transport.close()
    stats = publish.describe()["depacketizer"]
    assert publish.nacks >= 1
    if repair == "nack":
        assert stats["lost"] == 0 and stats["dropped_units"] == 0
        assert publish.keyframes == keyframes_before  # nothing to repair with a keyframe
    else:
        assert stats["lost"] >= 3 and stats["dropped_units"] >= 1
    assert got["codecs"] == {"video": "h264", "audio": "aac"}
    assert got["first_keyframe"] is True
    assert got["errors"] == []  # no damaged picture reached the viewer
    assert len(got["video_dts"]) == 120 and got["decoded"] >= 110
    vd = got["video_dts"]
    assert all(b > a for a, b in itertools.pairwise(vd))
    assert got["audio_dts"]
