"""The one UDP port of a process: every WebRTC session's ICE, DTLS and SRTP on it.

Demultiplexing (RFC 7983 by first byte, then by remote address): a datagram from an
address a session has validated goes to that session (0-3 STUN, 20-63 DTLS, 128-191
SRTP/SRTCP); from an unknown address only a STUN binding request is looked at, and only
one whose USERNAME starts with a live session's ufrag and whose MESSAGE-INTEGRITY is good
with that session's password teaches the endpoint the address. Anything else is dropped
with a counter and no reply (no reflection, no per-packet state).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from aiohttp import web

from core.rtc.config import WebRtcConfig
from core.rtc.dtls import DtlsCertificate, DtlsConnection, DtlsContexts
from core.rtc.session import RtcSession
from media.webrtc import stun
from media.webrtc.negotiate import LocalParameters, OfferError, answer_offer

logger = logging.getLogger(__name__)

__all__ = ["RTC_ENDPOINT", "RtcEndpoint", "RtcOfferError", "setup"]

_ICE_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SWEEP_INTERVAL = 1.0
CERTIFICATE_ROTATION = 7 * 86400.0
"""Seconds before new sessions get a new DTLS certificate (each is valid for 30 days)."""
GSO_MAX_SEGMENTS = 64
"""Datagrams per UDP GSO send (the kernel's limit is 64)."""
GSO_MAX_BYTES = 65000
_UDP_SEGMENT: int | None = getattr(socket, "UDP_SEGMENT", 103 if sys.platform == "linux" else None)


class RtcOfferError(OfferError):
    """An offer refused: ``status`` (400 bad SDP, 406 no acceptable codec, 503 too many
    sessions or WebRTC off) and ``reason`` (a sentence for the client)."""


def _token(length: int) -> str:
    return "".join(secrets.choice(_ICE_ALPHABET) for _ in range(length))


def _parse_address(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, default_port
    ipaddress.ip_address(host)  # candidates must be IP literals
    return host, port


def _local_addresses(ipv6: bool) -> list[str]:
    try:
        import ifaddr
    except ImportError:  # pragma: no cover - ifaddr comes with aioice
        return ["127.0.0.1"]
    found: list[str] = []
    loopback: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addr = ipaddress.ip_address(ip.ip)
            elif ipv6:
                addr = ipaddress.ip_address(ip.ip[0])
            else:
                continue
            if addr.is_link_local:
                continue
            (loopback if addr.is_loopback else found).append(str(addr))
    return found + loopback


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtcEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a gone peer etc.: the session's deadlines handle it.
        logger.debug("webrtc udp: %s", exc)


class RtcEndpoint:
    """One per process; see ``core.rtc`` for the interface."""

    def __init__(self, config: WebRtcConfig, *, default_host: str = "0.0.0.0") -> None:
        self.config = config
        self.host = config.host or default_host
        self.port = 0
        self.candidates: tuple[tuple[str, int], ...] = ()
        self.sessions: dict[str, RtcSession] = {}
        self.dropped = 0
        """Datagrams dropped before reaching a session (unknown address, bad check...)."""
        self._by_ufrag: dict[str, RtcSession] = {}
        self._by_addr: dict[Any, RtcSession] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self.gso = False
        """UDP GSO (Linux UDP_SEGMENT) is used by :meth:`RtcSession.send_rtp_batch`."""
        self.send_drops = 0
        """Datagrams the kernel refused because the send buffer was full."""
        self.send_errors = 0
        self.gso_sends = 0
        self._contexts: DtlsContexts | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._certificate_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def fingerprint(self) -> str:
        if self._contexts is None:
            raise RuntimeError("RtcEndpoint not started")
        return self._contexts.certificate.fingerprint

    @property
    def stats(self) -> dict[str, Any]:
        """Figures for /metrics: sessions by state, datagrams dropped before a session."""
        states: dict[str, int] = {}
        for session in self.sessions.values():
            states[session.state] = states.get(session.state, 0) + 1
        return {
            "port": self.port,
            "sessions": len(self.sessions),
            "states": states,
            "dropped": self.dropped,
            "send_drops": self.send_drops,
            "send_errors": self.send_errors,
            "gso": self.gso,
            "gso_sends": self.gso_sends,
        }

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self) -> None:
        if self._transport is not None:
            return
        self._loop = asyncio.get_running_loop()
        certificate = await asyncio.to_thread(DtlsCertificate.generate)
        self._contexts = DtlsContexts(certificate)
        self._certificate_at = self._loop.time()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Our own socket: asyncio's transport only receives; sends go straight to the
        # socket (one syscall, no asyncio buffer: a full socket buffer drops the datagram).
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
                except OSError:
                    pass
            try:
                sock.bind((self.host, self.config.udp_port))
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"webrtc: cannot bind UDP {self.host}:{self.config.udp_port} ({exc.strerror});"
                    " set webrtc.udp_port (BERRYLIVE_WEBRTC_UDP_PORT) or webrtc.enabled = false",
                ) from exc
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Protocol(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._transport = transport
        self.gso = _UDP_SEGMENT is not None
        self.port = sock.getsockname()[1]
        self.candidates = self._candidates()
        self._sweeper = asyncio.create_task(self._sweep(), name="webrtc-sweep")
        logger.info(
            "webrtc: UDP %s:%d, candidates %s",
            self.host,
            self.port,
            ", ".join(f"{h}:{p}" for h, p in self.candidates),
        )

    def _candidates(self) -> tuple[tuple[str, int], ...]:
        if self.config.public_addresses:
            return tuple(_parse_address(a, self.port) for a in self.config.public_addresses)
        if self.host in ("0.0.0.0", "::", ""):
            return tuple((a, self.port) for a in _local_addresses(self.host == "::"))
        return ((self.host, self.port),)

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            session.close("shutdown")
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        if self._transport is not None:
            self._transport.close()  # closes the socket too
            self._transport = None
            self._sock = None

    def link_headers(self) -> list[str]:
        """``Link`` header values for the configured ICE servers (RFC 9725 4.6)."""
        out: list[str] = []
        for entry in self.config.ice_servers:
            parts = entry.split()
            if not parts:
                continue
            value = f'<{parts[0]}>; rel="ice-server"'
            if len(parts) >= 3:
                value += f'; username="{parts[1]}"; credential="{parts[2]}"'
                value += '; credential-type="password"'
            out.append(value)
        return out

    def open_session(
        self,
        offer_sdp: str,
        *,
        direction: Literal["recvonly", "sendonly"],
        video_codecs: Sequence[str] = ("H264",),
        audio_codecs: Sequence[str] = ("opus",),
        header_extensions: Sequence[str] | None = None,
        prefer_h264_profile: str | None = None,
        ssrcs: tuple[int, int, int] | None = None,
    ) -> RtcSession:
        """Answer ``offer_sdp`` and start a session; :class:`RtcOfferError` if refused.

        ``ssrcs``: the (video, audio, video RTX) SSRCs to signal for what we send; by
        default random ones. A fan-out that sends the same packets to many sessions
        passes its own, so its packets need no per-session copy."""
        if self._transport is None or self._contexts is None or self._loop is None:
            raise RtcOfferError(503, "WebRTC is not running on this node")
        if len(self.sessions) >= self.config.max_sessions:
            raise RtcOfferError(503, f"too many WebRTC sessions ({self.config.max_sessions})")
        ufrag = _token(8)
        while ufrag in self._by_ufrag:
            ufrag = _token(8)
        pwd = _token(24)
        local = LocalParameters(
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=self._contexts.certificate.fingerprint,
            candidates=self.candidates,
            session_id=secrets.randbits(62),
            video_ssrc=ssrcs[0] if ssrcs else secrets.randbits(32) or 1,
            audio_ssrc=ssrcs[1] if ssrcs else secrets.randbits(32) or 2,
            video_rtx_ssrc=ssrcs[2] if ssrcs else secrets.randbits(32) or 3,
            stream_id=f"berrylive-{ufrag}",
        )
        try:
            answer = answer_offer(
                offer_sdp,
                direction=direction,
                video_codecs=video_codecs,
                audio_codecs=audio_codecs,
                local=local,
                header_extensions=header_extensions,
                prefer_h264_profile=prefer_h264_profile,
            )
        except OfferError as exc:
            raise RtcOfferError(exc.status, exc.reason) from None
        dtls = DtlsConnection(self._contexts, answer.dtls_role, mtu=self.config.dtls_mtu)
        session = RtcSession(
            self,
            session_id=secrets.token_urlsafe(12),
            direction=direction,
            local_ufrag=ufrag,
            local_pwd=pwd,
            remote=answer.remote,
            dtls=dtls,
            answer_sdp=answer.sdp,
            video=answer.video,
            audio=answer.audio,
            now=self._loop.time(),
        )
        self.sessions[session.id] = session
        self._by_ufrag[ufrag] = session
        return session

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    # --- datagrams ----------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Any) -> None:
        session = self._by_addr.get(addr)
        if not data:
            return
        first = data[0]
        try:
            if first < 4:
                self._stun(data, addr, session)
                return
            if session is None:
                self.dropped += 1
                return
            if first >= 128:
                if first < 192:
                    session._srtp_datagram(data, self._loop.time())  # type: ignore[union-attr]
                    return
            elif 20 <= first < 64:
                session._dtls_datagram(data, addr, self._loop.time())  # type: ignore[union-attr]
                return
            self.dropped += 1
        except Exception:
            # A bug of ours met by one peer's datagram: that session ends, the others go on.
            victim = session or self._by_addr.get(addr)
            logger.exception("webrtc: datagram from %s", addr)
            if victim is not None:
                victim.close("error")

    def _stun(self, data: bytes, addr: Any, known: RtcSession | None) -> None:
        if not stun.is_stun(data):
            self.dropped += 1
            return
        try:
            message = stun.parse(data)
        except stun.StunError:
            self.dropped += 1
            return
        if message.method != stun.BINDING or message.cls != stun.CLASS_REQUEST:
            if known is not None and message.cls == stun.CLASS_INDICATION:
                known.last_received_at = self._loop.time()  # type: ignore[union-attr]
            else:
                self.dropped += 1
            return
        username = message.username or ""
        ours, _, theirs = username.partition(":")
        session = self._by_ufrag.get(ours)
        if session is None or theirs != session.remote.ice_ufrag:
            self.dropped += 1
            return
        if not message.check_integrity(session._local_key):
            self.dropped += 1
            return
        session._binding_request(message, addr, self._loop.time())  # type: ignore[union-attr]

    def _send(self, data: bytes, addr: Any) -> bool:
        sock = self._sock
        if sock is None or addr is None:
            return False
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            self.send_drops += 1  # the kernel's send buffer is full: UDP may drop
            return False
        except OSError as exc:
            self.send_errors += 1
            logger.debug("webrtc udp send to %s: %s", addr, exc)
            return False
        return True

    def _send_many(self, datagrams: list[bytes], addr: Any) -> int:
        """Send datagrams to one address in order; runs of equal size (the last may be
        shorter) go as one UDP GSO ``sendmsg`` (Linux UDP_SEGMENT) where the kernel can.
        Returns how many were handed to the kernel."""
        sent = 0
        count = len(datagrams)
        i = 0
        while i < count:
            size = len(datagrams[i])
            j = i + 1
            if self.gso:
                total = size
                while (
                    j < count
                    and j - i < GSO_MAX_SEGMENTS
                    and total + len(datagrams[j]) <= GSO_MAX_BYTES
                    and len(datagrams[j - 1]) == size
                    and len(datagrams[j]) <= size
                ):
                    total += len(datagrams[j])
                    j += 1
            if j - i == 1:
                if not self._send(datagrams[i], addr):
                    return sent
                sent += 1
            else:
                outcome = self._send_segments(datagrams[i:j], size, addr)
                if outcome < 0:
                    return sent
                sent += outcome
            i = j
        return sent

    def _send_segments(self, group: list[bytes], size: int, addr: Any) -> int:
        sock = self._sock
        option = _UDP_SEGMENT
        if sock is None or addr is None or option is None:
            return -1
        try:
            sock.sendmsg(
                [b"".join(group)],
                [(socket.SOL_UDP, option, size.to_bytes(2, "little"))],
                0,
                addr,
            )
        except BlockingIOError:
            self.send_drops += len(group)
            return -1
        except OSError as exc:
            # No GSO here after all (old kernel, a device without it): per datagram from now.
            logger.info("webrtc: UDP GSO unavailable (%s); sending one datagram per call", exc)
            self.gso = False
            sent = 0
            for data in group:
                if not self._send(data, addr):
                    return sent if sent else -1
                sent += 1
            return sent
        self.gso_sends += 1
        return len(group)

    def _route(self, addr: Any, session: RtcSession) -> None:
        previous = self._by_addr.get(addr)
        if previous is not None and previous is not session:
            # The same remote address now proves another session's credentials (a client
            # that reuses its port): the newer session owns it.
            previous._lose_address(addr)
        self._by_addr[addr] = session

    def _unroute(self, addr: Any, session: RtcSession) -> None:
        if self._by_addr.get(addr) is session:
            del self._by_addr[addr]

    def _forget(self, session: RtcSession) -> None:
        self.sessions.pop(session.id, None)
        if self._by_ufrag.get(session.local_ufrag) is session:
            del self._by_ufrag[session.local_ufrag]
        for addr in session._addresses:
            self._unroute(addr, session)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            if now - self._certificate_at > CERTIFICATE_ROTATION:
                # New sessions get a fresh certificate; live ones keep theirs.
                self._certificate_at = now
                certificate = await asyncio.to_thread(DtlsCertificate.generate)
                self._contexts = DtlsContexts(certificate)
                logger.info("webrtc: new DTLS certificate %s", certificate.fingerprint)
            for session in list(self.sessions.values()):
                try:
                    session._check_deadlines(now)
                except Exception:
                    logger.exception("webrtc sweep of session %s", session.id)


RTC_ENDPOINT: web.AppKey[RtcEndpoint] = web.AppKey("berrylive.rtc_endpoint", RtcEndpoint)


def setup(app: web.Application, config: WebRtcConfig, *, default_host: str = "0.0.0.0") -> None:
    """Put the process's :class:`RtcEndpoint` at ``app[RTC_ENDPOINT]`` and run it in a
    cleanup context (started before, closed after, the packages that open sessions)."""
    endpoint = RtcEndpoint(config, default_host=default_host)
    app[RTC_ENDPOINT] = endpoint

    async def _ctx(app: web.Application) -> AsyncIterator[None]:
        if config.enabled:
            await endpoint.start()
        try:
            yield
        finally:
            await endpoint.close()

    app.cleanup_ctx.append(_ctx)
