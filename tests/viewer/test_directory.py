"""The watch directory: one lookup per stream for any number of viewers asking at once,
kept ``ttl`` seconds, failures not kept, bounded."""

from __future__ import annotations

import asyncio

from viewer.directory import Directory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_single_flight_then_kept_for_ttl() -> None:
    release = asyncio.Event()
    asked: list[tuple[str, str]] = []

    async def lookup(app_name: str, stream: str) -> str:
        asked.append((app_name, stream))
        await release.wait()
        return f"{app_name}/{stream}#{len(asked)}"

    clock = Clock()
    d: Directory[str] = Directory(lookup, ttl=1.0, clock=clock)
    waiting = [asyncio.create_task(d.get("live", "a")) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert set(await asyncio.gather(*waiting)) == {"live/a#1"}
    assert asked == [("live", "a")]
    clock.now += 0.9
    assert await d.get("live", "a") == "live/a#1"  # kept
    assert await d.get("live", "b") == "live/b#2"  # another stream: its own lookup
    clock.now += 0.2
    assert await d.get("live", "a") == "live/a#3"  # expired: asked again
    assert d.lookups == 3


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    gate = asyncio.Event()
    calls = 0

    async def lookup(app_name: str, stream: str) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 1:
            raise ConnectionError("database away")
        return "ok"

    d: Directory[str] = Directory(lookup)
    waiting = [asyncio.create_task(d.get("live", "a")) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results), results
    assert await d.get("live", "a") == "ok"
    assert calls == 2


async def test_bounded() -> None:
    async def lookup(app_name: str, stream: str) -> str:
        return stream

    d: Directory[str] = Directory(lookup, max_entries=3)
    for i in range(10):
        await d.get("live", str(i))
    assert d.lookups == 10
    await d.get("live", "9")  # kept
    await d.get("live", "0")  # pushed out long ago
    assert d.lookups == 11
