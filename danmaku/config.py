"""Configuration of the danmaku hub (``[danmaku]`` in the TOML file, ``BERRYLIVE_DANMAKU_*``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DanmakuConfig:
    enabled: bool = True
    """Mount the Socket.IO hub at ``/socket.io/`` (namespace ``/live``)."""
    tick_ms: int = 150
    """Merge comments, likes, presence and notices per room per tick (one frame per client)."""
    namespace: str = "/live"
    """Socket.IO namespace of the hub."""
    cors_allowed_origins: tuple[str, ...] = ("*",)
    """Origins allowed to open the Socket.IO transport (tokens travel in ``auth``, not cookies)."""
    max_message_bytes: int = 16384
    """Largest Engine.IO message accepted from a client; bigger closes that connection."""
    max_comment_chars: int = 200
    """Longest comment (Unicode code points, after trimming)."""
    batch_max_comments: int = 60
    """Ordinary comments per room per tick; more are sampled (anchor/moderator/operator kept)."""
    batch_max_priority: int = 200
    """Anchor/moderator/operator comments per room per tick (beyond: dropped and counted)."""
    history_size: int = 200
    """Comments kept per room in Redis (the resume window)."""
    history_on_join: int = 50
    """Comments sent to a client that joins without a last-seen id."""
    rate_capacity: float = 5.0
    """Token bucket per user: burst size (comments)."""
    rate_per_s: float = 1.0
    """Token bucket per user: refill rate (comments per second)."""
    likes_per_s: float = 30.0
    """Likes one user may add per second (bursts up to ``likes_max_per_message``)."""
    likes_max_per_message: int = 100
    """Largest ``count`` accepted in one ``like`` message."""
    sensitive_words: tuple[str, ...] = ()
    """Words masked with ``*`` in comments (case-insensitive)."""
    sensitive_words_file: str = ""
    """Optional UTF-8 file with one sensitive word per line (added to ``sensitive_words``)."""
    filter_skip_separators: bool = True
    """Also match words split by spaces or punctuation (``b a d`` matches ``bad``)."""
    client_backlog_max: int = 64
    """Frames queued for one client; a client further behind is disconnected (it may resume)."""
    client_backlog_bytes: int = 1 << 20
    """Bytes written but not yet sent to one websocket client; beyond, it is disconnected."""
    presence_interval_s: float = 2.0
    """How often each node publishes its per-room online count to Redis."""
    redis_prefix: str = "berrylive:dm:"
    """Prefix of every Redis key and channel of the hub."""
    token_ttl_s: int = 86400
    """Default lifetime of tokens made by ``issue_token``."""
    notice_topics: tuple[str, ...] = (
        "card.*",
        "flash_sale.*",
        "stream.published",
        "stream.unpublished",
        "danmaku.notice",
    )
    """Event-bus topics delivered to rooms as notices (payload names ``room`` or app+stream)."""
    lottery_max_window_s: int = 3600
    """Longest lottery entry window."""
    lottery_retention_s: int = 30 * 86400
    """Seconds a finished lottery's Redis keys (entrants, winners, seed) are kept once all
    its prizes are in the outbox, for anyone verifying the draw; then they expire."""
    room_ttl_s: int = 7 * 86400
    """Seconds a room's Redis keys (comment history, likes, moderation, deleted ids,
    presence) live after the room's last write; each write renews it."""
    audit_max: int = 100000
    """Moderation/lottery audit entries kept in Redis (approximate trim)."""
    anonymous_rooms: str = "known"
    """``known``: a socket without a token may join only a room that exists (a broadcast's
    or a live stream's, or one open with members on some node); ``any``: any room name."""
    max_rooms: int = 10000
    """Rooms one node serves at once (a join beyond is refused)."""
    max_users_tracked: int = 200000
    """Per-user rate-limit states kept in memory (least recently used are forgotten)."""
