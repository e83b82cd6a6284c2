"""core.outbox against a real valkey: an entry is handled until acknowledged, by this
consumer after a failure or by another after a consumer died, refused entries are dropped,
and trimming never drops an entry some group still owes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from core.events import BusEvent
from core.outbox import Consumer, Outbox, Rejected
from core.redis import EmbeddedValkey


@dataclass(frozen=True, slots=True)
class Parcel(BusEvent, topic="test.outbox.parcel"):
    n: int
    note: str = ""


@pytest.fixture
async def redis(tmp_path):
    vk = EmbeddedValkey(tmp_path / "valkey", persist=False)
    await vk.start()
    client = aioredis.Redis.from_url(vk.url)
    try:
        yield client
    finally:
        await client.aclose()
        await vk.stop()


async def until(cond, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def collector() -> tuple[list[int], Callable[[Parcel], Awaitable[None]]]:
    """A handler that records each parcel's ``n``, and the list it records into."""
    got: list[int] = []

    async def handle(p: Parcel) -> None:
        got.append(p.n)

    return got, handle


@contextlib.asynccontextmanager
async def running(c: Consumer[Parcel]) -> AsyncIterator[Consumer[Parcel]]:
    """The consumer started, and stopped however the block ends."""
    c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_delivered_once_each_in_order_and_trimmed(redis) -> None:
    box = Outbox(redis, prefix="t1:")
    await box.put(*(Parcel(n) for n in range(5)))  # put before any consumer exists
    got, handle = collector()
    async with running(Consumer(box, Parcel, "g", "c1", handle, block_s=0.05)):
        await until(lambda: len(got) == 5)
        await box.put(Parcel(5))
        await until(lambda: len(got) == 6)
    assert got == [0, 1, 2, 3, 4, 5]
    assert (await redis.xpending(box.key(Parcel), "g"))["pending"] == 0
    assert await redis.xlen(box.key(Parcel)) == 0  # all handled: trimmed away


async def test_a_failed_handler_gets_the_entry_again(redis) -> None:
    box = Outbox(redis, prefix="t2:")
    calls: list[int] = []

    async def flaky(p: Parcel) -> None:
        calls.append(p.n)
        if len(calls) < 3:
            raise ConnectionError("database down")

    async with running(
        Consumer(box, Parcel, "g", "c1", flaky, claim_idle_s=0.05, block_s=0.05)
    ) as c:
        await box.put(Parcel(7))
        await until(lambda: c.stats.handled == 1)
    assert calls == [7, 7, 7] and c.stats.failed == 2
    assert (await redis.xpending(box.key(Parcel), "g"))["pending"] == 0


async def test_entries_of_a_dead_consumer_are_claimed_by_another(redis) -> None:
    box = Outbox(redis, prefix="t3:")
    key = box.key(Parcel)
    await box.put(Parcel(1), Parcel(2))
    # a consumer reads both and dies before acknowledging them
    await redis.xgroup_create(key, "g", id="0", mkstream=True)
    taken = await redis.xreadgroup("g", "dead", {key: ">"}, count=10)
    assert len(taken[0][1]) == 2
    got, handle = collector()
    async with running(
        Consumer(box, Parcel, "g", "alive", handle, claim_idle_s=0.1, block_s=0.05)
    ) as c:
        await until(lambda: sorted(got) == [1, 2])
    assert c.stats.claimed == 2
    assert (await redis.xpending(key, "g"))["pending"] == 0


async def test_refused_and_malformed_entries_are_dropped_not_retried(redis) -> None:
    box = Outbox(redis, prefix="t4:")
    key = box.key(Parcel)
    await redis.xadd(key, {"data": b"{not json"})
    await redis.xadd(key, {"data": b'{"note": "no n"}'})
    await box.put(Parcel(1), Parcel(2))

    async def handle(p: Parcel) -> None:
        if p.n == 1:
            raise Rejected("not ours")

    async with running(
        Consumer(box, Parcel, "g", "c1", handle, claim_idle_s=0.05, block_s=0.05)
    ) as c:
        await until(lambda: c.stats.handled == 1 and c.stats.rejected == 3)
        await asyncio.sleep(0.2)  # a refused entry would come back after claim_idle_s
    assert c.stats.handled == 1 and c.stats.rejected == 3
    assert (await redis.xpending(key, "g"))["pending"] == 0


async def test_trimming_keeps_what_another_group_still_owes(redis) -> None:
    box = Outbox(redis, prefix="t5:")
    key = box.key(Parcel)
    await redis.xgroup_create(key, "slow", id="0", mkstream=True)  # reads nothing yet
    got, handle = collector()
    async with running(Consumer(box, Parcel, "fast", "c1", handle, block_s=0.05)):
        await box.put(Parcel(1), Parcel(2), Parcel(3))
        await until(lambda: len(got) == 3)
    assert await redis.xlen(key) == 3  # the slow group has not had them yet
    late, handle_late = collector()
    async with running(Consumer(box, Parcel, "slow", "c2", handle_late, block_s=0.05)):
        await until(lambda: len(late) == 3)
    assert late == [1, 2, 3]
    assert await redis.xlen(key) == 0


async def test_the_consumer_survives_a_redis_outage(tmp_path) -> None:
    vk = EmbeddedValkey(tmp_path / "valkey-outage", persist=True)
    await vk.start()
    client = aioredis.Redis.from_url(vk.url)
    box = Outbox(client, prefix="t6:")
    got, handle = collector()
    try:
        async with running(Consumer(box, Parcel, "g", "c1", handle, block_s=0.05)):
            await box.put(Parcel(1))
            await until(lambda: got == [1])
            await vk.stop()
            await vk.start()
            await box.put(Parcel(2))
            await until(lambda: got == [1, 2], timeout=20)
    finally:
        await client.aclose()
        await vk.stop()
