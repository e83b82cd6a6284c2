"""Who watches a stream over HLS: HLS viewers are requests, not connections.

A viewer is a client key seen by a playlist, part or segment request of the stream in the
last ``window`` seconds (two target durations: a plain player reloads the playlist at least
once per target duration, a low-latency one at every part). The key is the client's address
and a hash of its ``User-Agent``: no session id is added to the URIs, so a part's URI stays
the same for everyone and a CDN caches it once (see docs/hls.md for what that costs).

Memory is bounded: at most ``per_stream`` keys per stream (a stream at its cap counts no new
key: its count saturates there) and ``total`` in all (past it, the key seen longest ago, of
any stream, makes room). One table in order of last sight: expiring is popping its front.
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
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._counts: dict[str, int] = {}

    @property
    def total(self) -> int:
        return len(self._seen)

    def see(self, stream: str, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._expire(now)
        item = (stream, key)
        if item in self._seen:
            self._seen[item] = now
            self._seen.move_to_end(item)
            return
        if self._counts.get(stream, 0) >= self.per_stream:
            return
        if len(self._seen) >= self.total_cap:
            self._drop(self._seen.popitem(last=False)[0][0])
        self._seen[item] = now
        self._counts[stream] = self._counts.get(stream, 0) + 1

    def count(self, stream: str, now: float | None = None) -> int:
        self._expire(time.monotonic() if now is None else now)
        return self._counts.get(stream, 0)

    def counts(self, now: float | None = None) -> dict[str, int]:
        self._expire(time.monotonic() if now is None else now)
        return dict(self._counts)

    def forget(self, stream: str) -> None:
        if self._counts.pop(stream, None):
            for item in [i for i in self._seen if i[0] == stream]:
                del self._seen[item]

    def _drop(self, stream: str) -> None:
        n = self._counts.get(stream, 0) - 1
        if n > 0:
            self._counts[stream] = n
        else:
            self._counts.pop(stream, None)

    def _expire(self, now: float) -> None:
        limit = now - self.window
        seen = self._seen
        while seen:
            item, at = next(iter(seen.items()))
            if at >= limit:
                break
            del seen[item]
            self._drop(item[0])
