from __future__ import annotations

from dataclasses import dataclass

from core.config import ConfigError

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


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
    transcode: bool = True
    """WHEP plays a stream WebRTC cannot carry as it is (H.264 with B-frames, HEVC, AV1 or
    other video) through one transcode per stream: an ffmpeg (libx264, no B-frames, Main
    profile) started with the stream's first WHEP viewer and stopped with its last, shared
    by all of them. Off: such streams are refused with 406, as before."""
    max_transcodes: int = 2
    """Streams this node transcodes for WHEP at once (one ffmpeg each: ~22 % of a core for
    a 720p30 2 Mb/s stream at ``veryfast`` here, more for busy pictures or 1080p;
    docs/webrtc.md). Beyond: 406 saying the node's transcode capacity is in use."""
    transcode_preset: str = "veryfast"
    """x264 preset of the WHEP transcode (``ultrafast`` ... ``medium``): faster presets cost
    less CPU for a lower quality at the same bitrate."""
    transcode_bitrate: int = 0
    """Video bitrate of the WHEP transcode in kbit/s; 0: the source's, as measured over the
    hub's cached GOP when the transcode starts (2000 when it cannot be measured)."""

    def __post_init__(self) -> None:
        if self.transcode_preset not in X264_PRESETS:
            raise ConfigError(
                f"webrtc.transcode_preset: {self.transcode_preset!r} is not an x264 preset "
                f"({', '.join(X264_PRESETS)})"
            )
        if self.max_transcodes < 0 or self.transcode_bitrate < 0:
            raise ConfigError("webrtc.max_transcodes and webrtc.transcode_bitrate must be >= 0")
