"""Which broadcast plays at ``app/stream``, as the page's API tells it: control's records
read at most once a second per stream however many viewers open the page at once.

Every viewer's page asks ``GET /api/watch/APP/STREAM`` when it opens; a popular show's
start brings thousands at once. Concurrent asks for one stream share one lookup
(single flight), and its answer is kept ``ttl`` seconds (a state change shows within that
time). At most ``max_entries`` streams are kept (the oldest go first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Directory"]

T = TypeVar("T")


class Directory(Generic[T]):
    def __init__(
        self,
        lookup: Callable[[str, str], Awaitable[T]],
        *,
        ttl: float = 1.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], tuple[float, T]] = OrderedDict()
        self._flying: dict[tuple[str, str], asyncio.Future[T]] = {}
        self.lookups = 0
        """Lookups made (for tests and figures)."""

    async def get(self, app_name: str, stream: str) -> T:
        key = (app_name, stream)
        kept = self._kept.get(key)
        if kept is not None and kept[0] > self._clock():
            return kept[1]
        flying = self._flying.get(key)
        if flying is not None:
            return await asyncio.shield(flying)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flying[key] = fut
        try:
            self.lookups += 1
            value = await self._lookup(app_name, stream)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._flying.pop(key, None)
        fut.set_result(value)
        self._kept[key] = (self._clock() + self._ttl, value)
        self._kept.move_to_end(key)
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)
        return value
