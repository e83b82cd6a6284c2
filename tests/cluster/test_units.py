"""Cluster pieces on their own: directory semantics on a real Redis, parsing, scheduling."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.redis import EmbeddedValkey, connect
from relay.backoff import backoff_delay
from relay.cluster import ClusterDirectory, NodeInfo
from relay.forward import Rule
from relay.scheduler import aggregate, choose_edge, play_url


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[ClusterDirectory]:
    url = os.environ.get("BERRYLIVE_TEST_REDIS_URL")
    embedded = None
    if not url:
        embedded = EmbeddedValkey(tmp_path, persist=False)
        await embedded.start()
        url = embedded.url
    client = connect(url)
    prefix = f"test:{uuid.uuid4().hex[:10]}:cluster:"
    try:
        yield ClusterDirectory(client, prefix, ttl=2.0)
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


def node(
    name: str, role: str = "edge", viewers: int = 0, cpu: float = 0.0, **kw: object
) -> NodeInfo:
    return NodeInfo(
        node=name, role=role, http=f"http://{name}:8080", rtmp=f"rtmp://{name}:1935",
        ts=time.time(), viewers=viewers, cpu=cpu, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_stream_claims_newest_publisher_wins_and_only_owner_releases(
    directory: ClusterDirectory,
) -> None:
    await directory.claim_stream("live/s", "origin-a")
    assert await directory.stream_owner("live/s") == "origin-a"
    await directory.claim_stream("live/s", "origin-b")  # the anchor moved: B wins at once
    assert await directory.stream_owner("live/s") == "origin-b"
    assert not await directory.refresh_stream("live/s", "origin-a")  # A may not take it back
    assert await directory.refresh_stream("live/s", "origin-b")
    await directory.release_stream("live/s", "origin-a")  # not A's to release
    assert await directory.stream_owner("live/s") == "origin-b"
    await directory.release_stream("live/s", "origin-b")
    assert await directory.stream_owner("live/s") is None


async def test_nodes_expire_and_deregister(directory: ClusterDirectory) -> None:
    await directory.put_node(node("edge-1", viewers=3))
    stale = node("edge-2")
    stale.ts -= 10  # a heartbeat from long ago: dead even if its key were still there
    await directory.put_node(stale)
    names = {n.node for n in await directory.nodes()}
    assert names == {"edge-1"}
    assert (await directory.node("edge-1")) is not None
    assert (await directory.node("edge-2")) is None
    await directory.redis.set(directory.node_key("bad"), b"{not json")
    await directory.redis.zadd(directory.nodes_key, {"bad": time.time()})
    assert {n.node for n in await directory.nodes()} == {"edge-1"}
    await directory.remove_node("edge-1")
    assert await directory.nodes() == []


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), st.none()))
def test_node_info_parser_never_crashes(raw: bytes | str | None) -> None:
    NodeInfo.from_json(raw)


def test_node_info_round_trip() -> None:
    n = node("edge-1", viewers=7, cpu=12.5, streams={"live/s": {"viewers": 7}})
    back = NodeInfo.from_json(n.to_json())
    assert back == n


def test_backoff_is_bounded_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(50):
        d = backoff_delay(attempt, 0.2, 3.0, rng)
        assert 0.1 <= d <= 3.0
    late = {round(backoff_delay(20, 0.2, 3.0, rng), 3) for _ in range(20)}
    assert len(late) > 10  # full jitter: retries of many edges do not line up


def test_scheduler_prefers_less_loaded_edge() -> None:
    busy, idle = node("busy", viewers=500), node("idle", viewers=10)
    rng = random.Random(3)
    assert {choose_edge([busy, idle], 10.0, rng).node for _ in range(20)} == {"idle"}  # type: ignore[union-attr]
    hot = node("hot", viewers=10, cpu=95.0)  # CPU counts: 95 % ~ 950 viewers
    assert choose_edge([hot, busy], 10.0, rng).node == "busy"  # type: ignore[union-attr]
    assert choose_edge([], 10.0) is None
    # Among many edges, load spreads (power of two choices), the busiest is never chosen.
    edges = [node(f"e{i}", viewers=i * 10) for i in range(8)]
    picks = [choose_edge(edges, 10.0, rng).node for _ in range(400)]  # type: ignore[union-attr]
    assert "e7" not in picks and len(set(picks)) >= 4


def test_play_urls() -> None:
    n = node("e1")
    assert play_url(n, "flv", "live", "s") == "http://e1:8080/live/s.flv"
    assert play_url(n, "ws", "live", "s") == "ws://e1:8080/live/s.flv"
    assert play_url(n, "rtmp", "live", "s") == "rtmp://e1:1935/live/s"
    assert play_url(n, "hls", "live", "s") == "http://e1:8080/live/s.m3u8"


def test_aggregate_counts_edge_upstreams_once() -> None:
    origin = node("o", role="origin", streams={"live/s": {"viewers": 3, "live": True}})
    e1 = node("e1", streams={"live/s": {"viewers": 40, "upstream": "http://o:8080"}})
    e2 = node("e2", streams={"live/s": {"viewers": 60, "upstream": "http://o:8080"}})
    [s] = aggregate([origin, e1, e2])
    assert s["viewers_total"] == 101  # 1 direct viewer on the origin + 40 + 60
    assert s["viewers"] == {"o": 1, "e1": 40, "e2": 60}
    assert s["origins"] == ["o"] and sorted(s["edges"]) == ["e1", "e2"] and s["live"]


def test_forward_rules() -> None:
    r = Rule.parse("live=rtmp://cdn.example.com/push?key=abc")
    assert r.matches("live", "any") and not r.matches("other", "any")
    assert r.target("s1") == ("cdn.example.com", 1935, "push", "s1?key=abc",
                              "rtmp://cdn.example.com:1935/push")  # fmt: skip
    r2 = Rule.parse("live/s1=rtmp://10.0.0.1:1936/app/{stream}_hd")
    assert r2.matches("live", "s1") and not r2.matches("live", "s2")
    assert r2.target("s1")[:4] == ("10.0.0.1", 1936, "app", "s1_hd")
    for bad in ("live", "live=http://x/y", "=rtmp"):
        with pytest.raises(ValueError):
            Rule.parse(bad)
