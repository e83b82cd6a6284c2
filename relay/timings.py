"""Summaries of recent durations for the operators' figures (``GET /api/whep``)."""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["quantiles_ms"]


def quantiles_ms(samples: Collection[float], digits: int = 3) -> dict[str, float] | None:
    """p50 / p99 / max of ``samples`` (seconds) in milliseconds, and how many there were;
    None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "p50": round(1000 * ordered[last // 2], digits),
        "p99": round(1000 * ordered[min(last, round(0.99 * last))], digits),
        "max": round(1000 * ordered[last], digits),
        "frames": len(ordered),
    }
