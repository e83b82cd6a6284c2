"""Two hub processes (two app instances) sharing one Redis, and a Redis restart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.redis import EmbeddedValkey
from danmaku.service import DANMAKU
from tests.danmaku.helpers import join, wait_until

ROOM = "live/cluster"


@pytest.fixture
async def valkey(tmp_path) -> AsyncIterator[EmbeddedValkey]:
    vk = EmbeddedValkey(tmp_path / "shared-redis", persist=False)
    await vk.start()
    yield vk
    await vk.stop()


async def two_nodes(server_factory, valkey):
    cfg = {"rate_capacity": 100.0, "presence_interval_s": 0.3}
    n1 = await server_factory("n1", redis={"url": valkey.url}, danmaku=cfg)
    n2 = await server_factory("n2", redis={"url": valkey.url}, danmaku=cfg)
    return n1, n2


async def test_comment_likes_moderation_cross_nodes(valkey, server_factory) -> None:
    n1, n2 = await two_nodes(server_factory, valkey)
    a = await join(n1, ROOM, "alice")
    b = await join(n2, ROOM, "bob")
    mod = await join(n1, ROOM, "mod", role="moderator")
    assert (await a.call("comment", "from node 1"))["ok"]
    assert (await b.call("comment", "from node 2"))["ok"]
    await wait_until(lambda: "from node 1" in b.texts, what="n1 -> n2")
    await wait_until(lambda: "from node 2" in a.texts, what="n2 -> n1")
    assert b.texts.count("from node 1") == 1 and a.texts.count("from node 2") == 1
    await b.call("like", {"count": 7})
    await a.call("like", {"count": 3})
    await wait_until(
        lambda: any(x.get("likes", {}).get("total") == 10 for x in a.of("comments")),
        what="likes total 10 on n1",
    )
    # presence counts the room across nodes (approximate, converges)
    await wait_until(
        lambda: any(x.get("presence", {}).get("online") == 3 for x in b.of("comments")),
        what="online 3 on n2",
    )
    # a mute on node 1 holds on node 2; a deletion reaches node 2's clients
    await mod.call("moderate", {"action": "mute", "user_id": "bob"})
    await wait_until(
        lambda: n2.app[DANMAKU].hub.rooms[ROOM].muted.get("bob") is not None, what="mute on n2"
    )
    assert (await b.call("comment", "am I muted?"))["error"]["code"] == "muted"
    cid = (await a.call("comment", "oops"))["id"]
    await mod.call("moderate", {"action": "delete", "comment_id": cid})
    await wait_until(
        lambda: any(cid in x.get("deleted", []) for x in b.of("comments")), what="deletion on n2"
    )
    # history written by one node is served by the other
    late = await join(n2, ROOM, "late")
    texts = [c["text"] for c in late.of("joined")[0]["history"]]
    # across nodes, history is in Redis arrival order (each node's writer is asynchronous)
    assert sorted(texts[:2]) == ["from node 1", "from node 2"] and "oops" not in texts
    for v in (a, b, mod, late):
        await v.close()


async def test_survives_redis_restart(valkey, server_factory) -> None:
    n1, n2 = await two_nodes(server_factory, valkey)
    h1 = n1.app[DANMAKU].hub
    h2 = n2.app[DANMAKU].hub
    a1 = await join(n1, ROOM, "a1")
    a2 = await join(n1, ROOM, "a2")
    b = await join(n2, ROOM, "b")
    await b.call("comment", "before")
    await wait_until(lambda: "before" in a1.texts, what="cross-node before restart")

    await valkey.stop()
    await wait_until(lambda: not h1.stats.redis_connected, timeout=10, what="n1 notices")
    assert (await a1.call("comment", "during"))["ok"]  # local clients keep talking
    await wait_until(lambda: "during" in a2.texts, what="local delivery without Redis")
    await wait_until(lambda: h1.stats.lost_remote_comments >= 1, what="loss counted")
    assert h1.stats.lost_history_comments >= 1 and h1.stats.redis_errors >= 1
    assert a1.sio.connected and a2.sio.connected and b.sio.connected

    await valkey.start()
    await wait_until(
        lambda: h1.stats.redis_connected and h2.stats.redis_connected,
        timeout=20,
        what="both nodes back on Redis",
    )
    await b.call("comment", "after")
    await wait_until(lambda: "after" in a1.texts, timeout=10, what="cross-node after restart")
    await a2.call("comment", "after too")
    await wait_until(lambda: "after too" in b.texts, timeout=10, what="n1 -> n2 after restart")
    assert h1.stats.redis_disconnects >= 1 and h1.stats.redis_down_seconds > 0
    for v in (a1, a2, b):
        await v.close()
