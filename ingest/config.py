from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IngestConfig:
    require_auth: bool = True
    """Refuse publishers without a valid signed push URL."""
    push_ttl: int = 86400
    """Default validity of a push URL issued by ``berrylive push-url`` (seconds)."""
    tencent_key: str = ""
    """Key for Tencent-style ``txSecret``/``txTime`` URLs (empty: that form is refused)."""
    tencent_app: str = "live"
    """The only app Tencent-style URLs are accepted for (that scheme does not sign the app);
    a stream whose key was rotated or revoked refuses them."""
    on_publish: str = ""
    """SRS-style hook URLs (JSON POST; allowed on HTTP 200 with body ``0``)."""
    on_unpublish: str = ""
    on_play: str = ""
    on_stop: str = ""
    hook_timeout: float = 3.0
    max_message_size: int = 16 * 1024 * 1024
    """Largest RTMP message the server assembles (bytes); larger closes that connection."""
    out_chunk_size: int = 65536
    """RTMP chunk size for what the server sends (large, so a message is one chunk)."""
    ack_window: int = 2_500_000
    """Window acknowledgement size announced to clients."""
    handshake_timeout: float = 10.0
    """The RTMP handshake must be complete this long after the connection was accepted
    (a deadline for the whole handshake, not per read: a byte every few seconds does not
    keep a connection open)."""
    start_timeout: float = 20.0
    """A connection must have a publish or play accepted this long after it was accepted
    (connect, createStream, publish/play and their hooks)."""
    idle_timeout: float = 30.0
    """Close a publisher that sends nothing for this long."""
    max_command_size: int = 256 * 1024
    """Largest RTMP message before a publish is accepted (bytes): an unauthenticated
    connection holds at most twice this."""
    max_connections: int = 5000
    """Most RTMP connections at once (publishers, players, edges pulling). At it, a new
    connection closes the oldest one with no publish or play yet (a flood of idle handshakes
    holds the cap with those) and is refused only when every one has started."""
    max_connections_per_ip: int = 200
    """Most RTMP connections at once from one address (0: no per-address limit)."""
