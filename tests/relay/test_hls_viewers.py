"""HLS viewers counted by request: the table's bounds (property test) and real players
(plain HTTP clients doing LL-HLS blocking reloads on a stream published by ffmpeg)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.cluster import CLUSTER
from relay.hls_http import HLS
from relay.hls_viewers import HlsAudience, client_key
from relay.http import REGISTRY
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.relay.hls_check import parse

# ---------------------------------------------------------------- the table

OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # stream
        st.integers(0, 12),  # client
        st.floats(0, 3, allow_nan=False),  # time step
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, per_stream=st.integers(1, 8), total=st.integers(1, 16))
def test_table_is_bounded_and_expires(
    ops: list[tuple[str, int, float]], per_stream: int, total: int
) -> None:
    window = 4.0
    aud = HlsAudience(window, per_stream=per_stream, total=total)
    big = HlsAudience(window, per_stream=10**6, total=10**6)
    model: dict[str, dict[int, float]] = {}
    now = 0.0
    for stream, client, dt in ops:
        now += dt
        aud.see(stream, str(client), now)
        big.see(stream, str(client), now)
        model.setdefault(stream, {})[client] = now
        counts = {s: aud.count(s, now) for s in "abc"}
        assert all(n <= per_stream for n in counts.values())
        assert aud.total == sum(counts.values()) <= total
        # uncapped: exactly the distinct clients seen within the window
        for s in "abc":
            recent = {c for c, at in model.get(s, {}).items() if at >= now - window}
            assert big.count(s, now) == len(recent)
        # the client just seen counts unless its stream is at its cap (which then holds)
        assert aud.count(stream, now) >= 1
        assert (stream, str(client)) in aud._seen or counts[stream] == per_stream
    aud.forget("a")
    assert aud.count("a", now) == 0 and aud.total == sum(aud.counts(now).values())
    # everything expires; the tables go with it
    later = now + window + 1
    assert aud.counts(later) == {} and aud.total == 0 and big.counts(later) == {}


def test_client_key() -> None:
    assert client_key("10.0.0.1", "hls.js") == client_key("10.0.0.1", "hls.js")
    assert client_key("10.0.0.1", "hls.js") != client_key("10.0.0.1", "Safari")
    assert client_key("10.0.0.1", "hls.js") != client_key("10.0.0.2", "hls.js")
    assert client_key(None, None).startswith("?|")


# ---------------------------------------------------------------- real players


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hlsviewers") / "gop2.flv", 6.0, gop=60)


async def play(url: str, user_agent: str, stop_: asyncio.Event, parts: list[int]) -> None:
    """A low-latency player of the playlist ``url``: blocking playlist reloads, each followed
    by its preload hint, until ``stop_``; ``parts[0]`` counts the parts it got."""
    base = url.rsplit("/", 1)[0]
    async with aiohttp.ClientSession(headers={"User-Agent": user_agent}) as s:
        query = ""
        while not stop_.is_set():
            async with s.get(f"{url}{query}") as r:
                if r.status != 200:
                    continue  # 503 on a block timeout: ask again
                pl = parse(await r.text())
            hint = pl.preload_hint
            assert hint is not None
            async with s.get(f"{base}/{hint['URI']}") as r:
                if r.status == 200:
                    await r.read()
                    parts[0] += 1
            msn, idx = (int(x) for x in hint["URI"].split("part-")[1][:-4].split("."))
            query = f"?_HLS_msn={msn}&_HLS_part={idx}"


async def test_players_count_while_they_poll(server_factory: Any, clip: Path) -> None:
    server = await server_factory(relay={"publisher_linger": 2.0})
    pub = await start_publisher(server.push_url("s"), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", "s")) is not None and h.gop_valid, 20)
    base = f"{server.http_url}/live"
    hub = registry.get("live", "s")
    stop_ = asyncio.Event()
    parts = [0]
    # three players; the third runs in two sessions with one User-Agent: one viewer
    agents = ["player-1", "player-2", "player-3", "player-3"]
    tasks = [asyncio.create_task(play(f"{base}/s.m3u8", ua, stop_, parts)) for ua in agents]
    try:
        assert hub is not None
        await wait_for(lambda: hub.stats()["viewers"].get("hls") == 3, 30)
        # still three while they keep polling (a window's worth of parts later)
        seen = parts[0]
        await wait_for(lambda: parts[0] >= seen + 4 * 3 * 8, 60)
        stats = hub.stats()
        assert stats["viewers"]["hls"] == 3 and stats["viewers_total"] == 3
        assert hub.audience == 0  # not hub connections: no FLV viewer was added
        assert server.app[HLS].stats()["viewers"] == 3
        # what the node tells the cluster (edge choice, the console's cluster view)
        node = server.app[CLUSTER].snapshot(0.0)
        assert node.viewers == 3 and node.streams["live/s"]["viewers"] == 3
        # one player stops: two
        stop_.set()
        await asyncio.gather(*tasks)
        stop_.clear()
        tasks = [asyncio.create_task(play(f"{base}/s.m3u8", ua, stop_, parts)) for ua in agents[:2]]
        await wait_for(lambda: hub.stats()["viewers"].get("hls") == 2, 30)
        # all stop: none (the hub reports no hls entry at 0, like any other protocol)
        stop_.set()
        await asyncio.gather(*tasks)
        await wait_for(lambda: "hls" not in hub.stats()["viewers"], 30)
        assert hub.stats()["viewers_total"] == 0
        assert server.app[CLUSTER].snapshot(0.0).viewers == 0
        assert server.app[HLS].audience.total == 0
    finally:
        stop_.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop(pub)
