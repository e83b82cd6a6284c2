"""What the hub reports: counters and gauges (``GET /api/danmaku/stats``) and log lines
for recurring problems that must not flood the log."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["HubStats", "Warnings"]


@dataclass
class HubStats:
    """Counters (monotonic) and gauges, exposed at ``GET /api/danmaku/stats``."""

    connections: int = 0
    refused: int = 0
    comments_in: int = 0
    comments_rejected: int = 0
    comments_filtered: int = 0
    likes_in: int = 0
    batches: int = 0
    frames: int = 0
    direct_frames: int = 0
    queued_frames: int = 0
    sampled_out: int = 0
    priority_dropped: int = 0
    slow_clients_dropped: int = 0
    remote_envelopes_in: int = 0
    redis_errors: int = 0
    lost_history_comments: int = 0
    lost_remote_comments: int = 0
    lost_remote_items: int = 0
    outbox_dropped: int = 0
    recovered_comments: int = 0
    redis_disconnects: int = 0
    redis_down_seconds: float = 0.0
    redis_connected: bool = False
    bus_notices: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Warnings:
    """Log the first occurrence and then every 1000th of a recurring problem."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._counts: dict[str, int] = {}

    def __call__(self, what: str, msg: str, *args: Any) -> None:
        n = self._counts.get(what, 0) + 1
        self._counts[what] = n
        if n == 1 or n % 1000 == 0:
            self._logger.warning(msg + " (occurrence %d)", *args, n)
