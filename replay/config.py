from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayConfig:
    enabled: bool = True
    """Record every live stream into live HLS and a VOD replay."""
    segment_seconds: float = 2.0
