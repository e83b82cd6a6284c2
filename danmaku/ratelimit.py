"""Token buckets per key, bounded in number (least recently used keys are forgotten).

Time comes in as ``now`` (seconds, monotonic); nothing here reads the clock.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Buckets"]


class Buckets:
    def __init__(self, capacity: float, rate: float, max_keys: int) -> None:
        if capacity <= 0 or rate < 0 or max_keys <= 0:
            raise ValueError("capacity and max_keys must be > 0, rate >= 0")
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 if allowed, else seconds until it would be."""
        tokens, last = self._state.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
        if tokens >= cost:
            self._state[key] = (tokens - cost, now)
            self._state.move_to_end(key)
            if len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return 0.0
        self._state[key] = (tokens, now)
        self._state.move_to_end(key)
        if len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        if self.rate <= 0 or cost > self.capacity:
            return float("inf")
        return (cost - tokens) / self.rate
