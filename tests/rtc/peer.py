"""A small WebRTC client for transport tests: ICE (full, controlling), DTLS, SRTP.

Not aiortc: a plain peer built from the sans-I/O pieces, so tests can do what a real client
does not (vanish without a close_notify, send garbage from a validated address, open many
sessions cheaply, pick its DTLS role). aiortc is the independent peer in the other tests.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any, Literal

import pylibsrtp

from core.rtc.dtls import DtlsCertificate, DtlsConnection, DtlsContexts
from media.webrtc import sdp, stun

_CERT: DtlsCertificate | None = None


def _contexts() -> DtlsContexts:
    global _CERT
    if _CERT is None:
        _CERT = DtlsCertificate.generate()
    return DtlsContexts(_CERT)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer: PlainPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.peer._datagram(data, addr)


def rtp_packet(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | pt])
        + seq.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def receiver_report(ssrc: int) -> bytes:
    """An empty RTCP RR (PT 201) from ``ssrc``."""
    return bytes([0x80, 201, 0, 1]) + ssrc.to_bytes(4, "big")


class PlainPeer:
    def __init__(
        self,
        *,
        direction: str = "sendonly",
        setup: Literal["actpass", "active", "passive"] = "actpass",
        video: bool = True,
        audio: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(16)
        self.direction = direction
        self.setup = setup
        self.video = video
        self.audio = audio
        self.contexts = _contexts()
        self.video_ssrc = int.from_bytes(os.urandom(4), "big")
        self.audio_ssrc = int.from_bytes(os.urandom(4), "big")
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.dtls: DtlsConnection | None = None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.received_rtp: list[bytes] = []
        self.received_rtcp: list[bytes] = []
        self.stun_responses: list[stun.StunMessage] = []
        self.connected = asyncio.Event()
        self.closed_by_remote = False
        self._timer: asyncio.TimerHandle | None = None
        self.drop_dtls = 0
        """DTLS datagrams from the server to ignore (a lossy path), then counted here."""
        self.dropped_dtls = 0
        self.retransmit = True
        """False: this peer never resends a DTLS flight (only the server's timer can)."""

    def offer(self) -> str:
        video, audio = self.video, self.audio
        lines = [
            "v=0",
            f"o=- {secrets.randbits(40)} 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE " + " ".join(m for m, on in (("0", video), ("1", audio)) if on),
        ]
        common = [
            "c=IN IP4 0.0.0.0",
            f"a=ice-ufrag:{self.ufrag}",
            f"a=ice-pwd:{self.pwd}",
            f"a=fingerprint:{self.contexts.certificate.fingerprint}",
            f"a=setup:{self.setup}",
            f"a={self.direction}",
            "a=rtcp-mux",
        ]
        if self.video:
            lines += ["m=video 9 UDP/TLS/RTP/SAVPF 96 97", *common, "a=mid:0"]
            lines += [
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                "a=rtcp-fb:96 nack",
                "a=rtcp-fb:96 nack pli",
                "a=rtpmap:97 rtx/90000",
                "a=fmtp:97 apt=96",
                f"a=ssrc:{self.video_ssrc} cname:plain",
            ]
        if self.audio:
            lines += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", *common, "a=mid:1"]
            lines += ["a=rtpmap:111 opus/48000/2", f"a=ssrc:{self.audio_ssrc} cname:plain"]
        return "\r\n".join(lines) + "\r\n"

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=(self.host, 0)
        )

    @property
    def local_address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def use_answer(self, answer: str) -> None:
        desc = sdp.parse(answer)
        media = next(m for m in desc.media if m.port != 0)
        self.remote_ufrag = desc.media_attribute(media, "ice-ufrag") or ""
        self.remote_pwd = desc.media_attribute(media, "ice-pwd") or ""
        cand = desc.media_attribute(media, "candidate") or ""
        parts = cand.split()
        self.remote = (parts[4], int(parts[5]))
        their_setup = desc.media_attribute(media, "setup")
        role: Literal["server", "client"] = "client" if their_setup == "passive" else "server"
        self.dtls = DtlsConnection(self.contexts, role)

    def send_check(self, *, use_candidate: bool = True, pwd: str | None = None) -> bytes:
        assert self.transport is not None and self.remote is not None
        tid = os.urandom(12)
        attrs = [
            (stun.ATTR_USERNAME, f"{self.remote_ufrag}:{self.ufrag}".encode()),
            (stun.ATTR_PRIORITY, (1853824767).to_bytes(4, "big")),
            (stun.ATTR_ICE_CONTROLLING, os.urandom(8)),
        ]
        if use_candidate:
            attrs.append((stun.ATTR_USE_CANDIDATE, b""))
        key = (pwd if pwd is not None else self.remote_pwd).encode()
        data = stun.build(
            stun.BINDING, stun.CLASS_REQUEST, tid, attrs, integrity_key=key, fingerprint=True
        )
        self.transport.sendto(data, self.remote)
        return tid

    async def connect(self, timeout: float = 10.0) -> None:
        """ICE check with USE-CANDIDATE, then the DTLS handshake (either role)."""
        assert self.dtls is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.stun_responses:
            self.send_check()
            try:
                await asyncio.wait_for(self._wait_response(), 0.5)
            except TimeoutError:
                if loop.time() > deadline:
                    raise
        if self.dtls.role == "client":
            self._send_all(self.dtls.start())
        await asyncio.wait_for(self.connected.wait(), max(0.1, deadline - loop.time()))

    async def _wait_response(self) -> None:
        while not self.stun_responses:
            await asyncio.sleep(0.01)

    def _send_all(self, datagrams: list[bytes]) -> None:
        assert self.transport is not None
        for d in datagrams:
            self.transport.sendto(d, self.remote)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.dtls is None or self.dtls.handshake_done or not self.retransmit:
            return
        delay = self.dtls.timeout()
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(max(delay, 0.01), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.dtls is not None and self.transport is not None:
            self._send_all(self.dtls.handle_timeout())

    def _datagram(self, data: bytes, addr: Any) -> None:
        if not data:
            return
        if data[0] < 4:
            message = stun.parse(data)
            assert message.check_integrity(self.remote_pwd.encode())
            self.stun_responses.append(message)
            return
        if 20 <= data[0] < 64 and self.dtls is not None:
            if self.drop_dtls > 0:
                self.drop_dtls -= 1
                self.dropped_dtls += 1
                return
            self._send_all(self.dtls.receive(data))
            if self.dtls.closed_by_peer:
                self.closed_by_remote = True
            if self.dtls.handshake_done and self.tx is None:
                keys = self.dtls.srtp_keys()
                self.tx = pylibsrtp.Session(
                    pylibsrtp.Policy(
                        key=keys.tx_key,
                        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=keys.profile,
                    )
                )
                self.rx = pylibsrtp.Session(
                    pylibsrtp.Policy(
                        key=keys.rx_key,
                        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                        srtp_profile=keys.profile,
                    )
                )
                self.connected.set()
            return
        if 128 <= data[0] < 192 and self.rx is not None:
            if 192 <= data[1] <= 223:
                self.received_rtcp.append(self.rx.unprotect_rtcp(data))
            else:
                self.received_rtp.append(self.rx.unprotect(data))

    def send_rtp(self, packet: bytes) -> None:
        assert self.tx is not None and self.transport is not None
        self.transport.sendto(self.tx.protect(packet), self.remote)

    def send_rtcp(self, packet: bytes) -> None:
        assert self.tx is not None and self.transport is not None
        self.transport.sendto(self.tx.protect_rtcp(packet), self.remote)

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.remote)

    def vanish(self) -> None:
        """Stop everything without telling the server (a peer whose network went away)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
