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
    idle_timeout: float = 30.0
    """Close a publisher that sends nothing for this long."""
