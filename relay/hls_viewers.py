"""Who watches a stream over HLS: HLS viewers are requests, not connections.

A viewer is a client key seen by a playlist, part or segment request of the stream in the
last ``window`` seconds (two target durations: a plain player reloads the playlist at least
once per target duration, a low-latency one at every part). The key is the client's address
and a hash of its ``User-Agent``: no session id is added to the URIs, so a part's URI stays
the same for everyone and a CDN caches it once (see docs/hls.md for what that costs).

Memory is bounded: at most ``per_stream`` keys per stream and ``total`` in all; past a cap
the stream's oldest key makes room, and a stream with none to give counts no new key (the
count saturates rather than growing the table).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

__all__ = ["HlsAudience", "client_key"]


def client_key(remote: str | None, user_agent: str | None) -> str:
    """The address (no port: a player opens several connections) + a short UA hash."""
    ua = hashlib.blake2b((user_agent or "").encode("utf-8", "replace"), digest_size=6)
    return f"{remote or '?'}|{ua.hexdigest()}"


class HlsAudience:
    """Recently seen HLS clients per stream, expired after ``window`` seconds."""

    def __init__(self, window: float, per_stream: int = 20000, total: int = 200000) -> None:
        self.window = window
        self.per_stream = per_stream
        self.total_cap = total
        self.total = 0
        self._streams: dict[str, OrderedDict[str, float]] = {}

    def see(self, stream: str, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        seen = self._streams.get(stream)
        if seen is None:
            seen = self._streams[stream] = OrderedDict()
        if key in seen:
            seen[key] = now
            seen.move_to_end(key)
            return
        self._expire(stream, seen, now)
        if len(seen) >= self.per_stream or self.total >= self.total_cap:
            if not seen:
                return
            seen.popitem(last=False)
            self.total -= 1
        seen[key] = now
        self.total += 1
        self._streams[stream] = seen  # again: expiring may have dropped an emptied table

    def count(self, stream: str, now: float | None = None) -> int:
        seen = self._streams.get(stream)
        if seen is None:
            return 0
        self._expire(stream, seen, time.monotonic() if now is None else now)
        return len(seen)

    def forget(self, stream: str) -> None:
        seen = self._streams.pop(stream, None)
        if seen is not None:
            self.total -= len(seen)

    def counts(self, now: float | None = None) -> dict[str, int]:
        now = time.monotonic() if now is None else now
        return {s: n for s in list(self._streams) if (n := self.count(s, now))}

    def _expire(self, stream: str, seen: OrderedDict[str, float], now: float) -> None:
        limit = now - self.window
        while seen:
            key, at = next(iter(seen.items()))
            if at >= limit:
                break
            del seen[key]
            self.total -= 1
        if not seen:
            self._streams.pop(stream, None)
