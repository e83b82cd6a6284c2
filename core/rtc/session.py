"""One WebRTC session on the shared port: ICE-lite checks, DTLS, SRTP, deadlines.

The endpoint (``core.rtc.endpoint``) owns the socket and routes each datagram here by
remote address; a session never touches the socket except through the endpoint's
``_send``. Everything is synchronous in the datagram callback: there are no per-session
queues to bound (``send_rtp`` either hands the packet to the kernel or drops it).

States (explicit transition table below): ``new`` (answer made) -> ``connecting`` (a
valid ICE check arrived) -> ``connected`` (DTLS done, fingerprint checked, SRTP keyed)
-> ``closed`` (a local close) or ``failed`` (ice-timeout, dtls-failed, no-media,
remote-closed). ``on_close`` is called exactly once, with the reason.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import pylibsrtp

from core.rtc.config import WebRtcConfig
from core.rtc.dtls import DtlsConnection, DtlsError
from media.webrtc import stun
from media.webrtc.negotiate import NegotiatedMedia, RemoteParameters

logger = logging.getLogger(__name__)

__all__ = ["CloseReason", "RtcSession", "SessionState"]

MAX_ADDRESSES = 8
"""Validated remote addresses remembered per session (candidate pairs that passed a check)."""

CloseReason = str
"""``closed`` (local close), ``ice-timeout``, ``dtls-failed``, ``no-media``,
``remote-closed`` (the peer sent a DTLS close_notify), ``shutdown`` (endpoint closed),
``error`` (a bug of ours met by this session's datagrams; logged)."""

TX_WINDOW = 4096
"""How far back (packets) a resent RTP packet may be and still be protected again."""
RX_WINDOW = 1024
"""SRTP replay window of what we receive (reordered packets within it are accepted)."""

_FAILURES = frozenset({"ice-timeout", "dtls-failed", "no-media", "remote-closed", "error"})


class SessionState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.NEW: frozenset(
        {SessionState.CONNECTING, SessionState.FAILED, SessionState.CLOSED}
    ),
    SessionState.CONNECTING: frozenset(
        {SessionState.CONNECTED, SessionState.FAILED, SessionState.CLOSED}
    ),
    SessionState.CONNECTED: frozenset({SessionState.FAILED, SessionState.CLOSED}),
    SessionState.FAILED: frozenset(),
    SessionState.CLOSED: frozenset(),
}


class SessionHost(Protocol):
    """What a session needs from its endpoint (``core.rtc.endpoint.RtcEndpoint``)."""

    config: WebRtcConfig

    def now(self) -> float: ...
    def _send(self, data: bytes, addr: Any) -> bool: ...
    def _send_many(self, datagrams: list[bytes], addr: Any) -> int: ...
    def _route(self, addr: Any, session: RtcSession) -> None: ...
    def _unroute(self, addr: Any, session: RtcSession) -> None: ...
    def _forget(self, session: RtcSession) -> None: ...


class RtcSession:
    """See ``core.rtc`` for the interface; made by :meth:`RtcEndpoint.open_session`."""

    def __init__(
        self,
        endpoint: SessionHost,
        *,
        session_id: str,
        direction: Literal["recvonly", "sendonly"],
        local_ufrag: str,
        local_pwd: str,
        remote: RemoteParameters,
        dtls: DtlsConnection,
        answer_sdp: str,
        video: NegotiatedMedia | None,
        audio: NegotiatedMedia | None,
        now: float,
    ) -> None:
        self.id = session_id
        self.direction = direction
        self.answer_sdp = answer_sdp
        self.video = video
        self.audio = audio
        self.local_ufrag = local_ufrag
        self._local_key = local_pwd.encode()
        self.remote = remote
        self.on_rtp: Callable[[bytes], None] | None = None
        self.on_rtcp: Callable[[bytes], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self.close_reason: str | None = None
        self.srtp_profile: str | None = None
        self._endpoint = endpoint
        self._dtls = dtls
        self._state = SessionState.NEW
        self._created_at = now
        self._addresses: list[Any] = []
        self._remote_addr: Any = None
        self._nominated = False
        self._dtls_started = False
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._connected = asyncio.Event()
        self._done = asyncio.Event()
        self.connected_at: float | None = None
        self.last_received_at = now
        self.last_media_at: float | None = None
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.drops_out = 0
        self.srtp_errors = 0
        self.callback_errors = 0
        self.stun_requests = 0

    # --- public interface -------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return None if self._remote_addr is None else (self._remote_addr[0], self._remote_addr[1])

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "state": self._state.value,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "drops_out": self.drops_out,
            "srtp_errors": self.srtp_errors,
            "callback_errors": self.callback_errors,
            "stun_requests": self.stun_requests,
            "last_received_at": self.last_received_at,
            "last_media_at": self.last_media_at,
            "remote_address": self.remote_address,
            "srtp_profile": self.srtp_profile,
            "nominated": self._nominated,
        }

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False on timeout or if the session ended first."""
        if self._state in (SessionState.CONNECTED, SessionState.CLOSED, SessionState.FAILED):
            return self._state is SessionState.CONNECTED
        connected = asyncio.ensure_future(self._connected.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({connected, done}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            connected.cancel()
            done.cancel()
        return self.state == "connected"

    async def wait_closed(self) -> str:
        await self._done.wait()
        return self.close_reason or "closed"

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send one RTP packet; False when dropped (not connected, socket
        backed up, or a packet libsrtp refuses). Never blocks."""
        return self._send_protected(packet, rtcp=False)

    def send_rtp_batch(self, packets: Sequence[bytes]) -> int:
        """Protect and send several RTP packets in order (e.g. one frame's); returns how
        many went out. Runs of equal-size packets leave in one UDP GSO syscall where the
        kernel has it (a third of the cost per packet); a full socket drops the rest."""
        tx = self._tx
        addr = self._remote_addr
        if tx is None or addr is None:
            self.drops_out += len(packets)
            return 0
        protected: list[bytes] = []
        for packet in packets:
            try:
                protected.append(tx.protect(packet))
            except pylibsrtp.Error:
                self.drops_out += 1
        sent = self._endpoint._send_many(protected, addr)
        self.drops_out += len(protected) - sent
        self.packets_out += sent
        self.bytes_out += sum(len(d) for d in protected[:sent])
        return sent

    def send_rtcp(self, packet: bytes) -> bool:
        return self._send_protected(packet, rtcp=True)

    def _send_protected(self, packet: bytes, *, rtcp: bool) -> bool:
        """Protect one RTP (or RTCP) packet and send it; False (and a drop counted) when
        not connected, libsrtp refuses the packet or the socket is backed up."""
        tx = self._tx
        if tx is None or self._remote_addr is None:
            self.drops_out += 1
            return False
        try:
            data = tx.protect_rtcp(packet) if rtcp else tx.protect(packet)
        except pylibsrtp.Error:
            self.drops_out += 1
            return False
        if not self._endpoint._send(data, self._remote_addr):
            self.drops_out += 1
            return False
        self.packets_out += 1
        self.bytes_out += len(data)
        return True

    def close(self, reason: str = "closed") -> None:
        """End the session (idempotent): a DTLS close_notify to the peer, then on_close."""
        if self._state in (SessionState.CLOSED, SessionState.FAILED):
            return
        if self._dtls.handshake_done and self._remote_addr is not None:
            for datagram in self._dtls.close():
                self._endpoint._send(datagram, self._remote_addr)
        target = SessionState.FAILED if reason in _FAILURES else SessionState.CLOSED
        self._set_state(target)
        self.close_reason = reason
        self._tx = self._rx = None
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        self._endpoint._forget(self)
        self._done.set()
        logger.info("webrtc session %s %s (%s)", self.id, target.value, reason)
        callback, self.on_close = self.on_close, None
        if callback is not None:
            try:
                callback(reason)
            except Exception:
                logger.exception("on_close of webrtc session %s raised", self.id)

    # --- from the endpoint --------------------------------------------------------------

    def _set_state(self, target: SessionState) -> None:
        if target not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"webrtc session: {self._state.value} -> {target.value}")
        self._state = target

    def _binding_request(self, message: stun.StunMessage, addr: Any, now: float) -> None:
        """A check whose USERNAME named us and whose integrity is good (endpoint checked)."""
        self.stun_requests += 1
        self.last_received_at = now
        mapped = stun.encode_xor_address(addr[0], addr[1], message.transaction_id)
        response = stun.build(
            stun.BINDING,
            stun.CLASS_SUCCESS,
            message.transaction_id,
            [(stun.ATTR_XOR_MAPPED_ADDRESS, mapped)],
            integrity_key=self._local_key,
            fingerprint=True,
        )
        self._endpoint._send(response, addr)
        if addr not in self._addresses:
            if len(self._addresses) >= MAX_ADDRESSES:
                stale = next(a for a in self._addresses if a != self._remote_addr)
                self._addresses.remove(stale)
                self._endpoint._unroute(stale, self)
            self._addresses.append(addr)
            self._endpoint._route(addr, self)
        nominate = message.has(stun.ATTR_USE_CANDIDATE)
        if self._remote_addr is None or (
            nominate and (addr != self._remote_addr or not self._nominated)
        ):
            self._remote_addr = addr
            self._nominated = self._nominated or nominate
        if self._state is SessionState.NEW:
            self._set_state(SessionState.CONNECTING)
        if not self._dtls_started and self._dtls.role == "client":
            self._dtls_started = True
            self._dtls_out(self._safe_dtls(self._dtls.start))

    def _lose_address(self, addr: Any) -> None:
        """Another session proved this address is its peer's (a reused client port): stop
        using it; without another address this session ends by its consent deadline."""
        self._addresses = [a for a in self._addresses if a != addr]
        if self._remote_addr == addr:
            self._remote_addr = self._addresses[-1] if self._addresses else None

    def _safe_dtls(self, step: Callable[[], list[bytes]]) -> list[bytes]:
        try:
            return step()
        except DtlsError as exc:
            logger.info("webrtc session %s: %s", self.id, exc)
            self.close("dtls-failed")
            return []

    def _dtls_out(self, datagrams: list[bytes]) -> None:
        if self._state in (SessionState.CLOSED, SessionState.FAILED):
            return
        for datagram in datagrams:
            self._endpoint._send(datagram, self._remote_addr)
        if self._dtls.handshake_done:
            if self._dtls.closed_by_peer:
                self.close("remote-closed")
            elif self._state is SessionState.CONNECTING:
                self._handshake_complete()
            return
        self._arm_dtls_timer()

    def _arm_dtls_timer(self) -> None:
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        delay = self._dtls.timeout()
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._dtls_timer = loop.call_later(max(delay, 0.01), self._dtls_timer_fired)

    def _dtls_timer_fired(self) -> None:
        self._dtls_timer = None
        if self._state is SessionState.CONNECTING and self._remote_addr is not None:
            self._dtls_out(self._safe_dtls(self._dtls.handle_timeout))

    def _handshake_complete(self) -> None:
        if not self._dtls.peer_fingerprint_matches(self.remote.fingerprints):
            logger.info("webrtc session %s: peer certificate does not match its SDP", self.id)
            self.close("dtls-failed")
            return
        try:
            keys = self._dtls.srtp_keys()
        except DtlsError as exc:
            logger.info("webrtc session %s: %s", self.id, exc)
            self.close("dtls-failed")
            return
        tx_policy = pylibsrtp.Policy(
            key=keys.tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=keys.profile
        )
        tx_policy.allow_repeat_tx = True  # NACK answered by resending the same packet
        tx_policy.window_size = TX_WINDOW  # ... even one sent thousands of packets ago
        rx_policy = pylibsrtp.Policy(
            key=keys.rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=keys.profile
        )
        rx_policy.window_size = RX_WINDOW
        self._tx = pylibsrtp.Session(policy=tx_policy)
        self._rx = pylibsrtp.Session(policy=rx_policy)
        self.srtp_profile = keys.profile_name
        self.connected_at = self._endpoint.now()
        self._set_state(SessionState.CONNECTED)
        self._connected.set()
        logger.info(
            "webrtc session %s connected from %s (%s)",
            self.id,
            self.remote_address,
            keys.profile_name,
        )

    def _dtls_datagram(self, data: bytes, addr: Any, now: float) -> None:
        # Not a sign of consent: anyone can forge a DTLS-looking datagram from an address
        # (consent is refreshed by checks with our password and by authenticated SRTP).
        if self._remote_addr is None:
            self._remote_addr = addr
        if self._dtls.role == "server" and not self._dtls_started:
            self._dtls_started = True
        self._dtls_out(self._safe_dtls(lambda: self._dtls.receive(data)))

    def _srtp_datagram(self, data: bytes, now: float) -> None:
        rx = self._rx
        if rx is None:
            return
        self.packets_in += 1
        self.bytes_in += len(data)
        if len(data) > 1 and 192 <= data[1] <= 223:
            try:
                packet = rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                self.srtp_errors += 1
                return
            callback = self.on_rtcp
        else:
            try:
                packet = rx.unprotect(data)
            except pylibsrtp.Error:
                self.srtp_errors += 1
                return
            self.last_media_at = now
            callback = self.on_rtp
        # only authenticated packets count as the peer being there (not spoofed ones)
        self.last_received_at = now
        if callback is not None:
            try:
                callback(packet)
            except Exception:
                self.callback_errors += 1
                if self.callback_errors == 1:  # once per session, not once per packet
                    logger.exception("webrtc session %s: callback raised", self.id)

    def _check_deadlines(self, now: float) -> None:
        """Called by the endpoint's sweep about once a second."""
        config = self._endpoint.config
        if self._state in (SessionState.NEW, SessionState.CONNECTING):
            if now - self._created_at > config.connect_timeout:
                self.close("ice-timeout" if self._state is SessionState.NEW else "dtls-failed")
            return
        if self._state is not SessionState.CONNECTED:
            return
        if now - self.last_received_at > config.consent_timeout:
            self.close("ice-timeout")
            return
        if self.direction == "recvonly":
            since = self.last_media_at or self.connected_at or now
            if now - since > config.no_media_timeout:
                self.close("no-media")
