from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RelayConfig:
    gop_max_frames: int = 1500
    """GOP cache bound in frames; beyond it the cache is cut (stream without keyframes)."""
    gop_max_bytes: int = 16 * 1024 * 1024
    """GOP cache bound in bytes."""
    viewer_max_backlog_bytes: int = 4 * 1024 * 1024
    """A viewer further behind than this skips to the next keyframe."""
    viewer_drop_after_skips: int = 8
    """A viewer that has skipped this many times in a row without catching up is dropped."""
    viewer_max_lag_ms: int = 3000
    """A viewer whose queued media spans more than this skips to the next keyframe."""
    write_coalesce_ms: int = 0
    """Merge writes to each viewer per tick (0 = write at once)."""
    publisher_linger: float = 10.0
    """Seconds a stream (and its viewers) waits for the publisher to come back."""
