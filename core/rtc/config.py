from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebRtcConfig:
    enabled: bool = True
    """Run the WebRTC media endpoint (WHIP ingest, WHEP playback). Off: those answer 503."""
    udp_port: int = 8189
    """The one UDP port every WebRTC session shares (ICE, DTLS, SRTP). 0 picks a free one."""
    host: str = ""
    """Address the UDP port binds to; empty: ``server.host``."""
    public_addresses: tuple[str, ...] = ()
    """Addresses advertised as ICE host candidates (``IP`` or ``IP:PORT``, comma-separated
    in env), e.g. the public IP of a NAT or the host side of a container port mapping.
    Empty: the bound address, or every local interface address when bound to a wildcard."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN servers for clients, advertised in WHIP/WHEP ``Link`` headers: ``URL`` or
    ``URL username credential`` (space-separated), e.g. ``stun:stun.example.net:3478``."""
    max_sessions: int = 1000
    """Sessions (publishers + viewers) at once on this node; more are refused with 503."""
    connect_timeout: float = 10.0
    """ICE and DTLS must complete this long after the answer was made, or the session
    fails (``ice-timeout`` / ``dtls-failed``)."""
    consent_timeout: float = 20.0
    """A connected session that gets no ICE check with its password and no authenticated
    SRTP/SRTCP for this long has lost its peer (``ice-timeout``)."""
    no_media_timeout: float = 10.0
    """A receiving (WHIP) session without an RTP packet for this long fails (``no-media``)."""
    dtls_mtu: int = 1200
    """Largest DTLS datagram sent during the handshake (bytes)."""
