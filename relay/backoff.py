"""Retry delays shared by the heartbeat, edge pulls and forwards."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2**attempt)]."""
    r = rng or random
    top = min(cap, base * (2 ** min(attempt, 30)))
    return r.uniform(min(base / 2, top), top)
