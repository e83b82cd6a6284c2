from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DanmakuConfig:
    enabled: bool = True
    tick_ms: int = 150
    """Merge comments, likes and notices per room per tick."""
