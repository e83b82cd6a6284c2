"""Two hub processes (two app instances) sharing one Redis, and a Redis restart."""

from __future__ import annotations

import asyncio

from danmaku.service import DANMAKU
from tests.danmaku.helpers import join, wait_until

ROOM = "live/cluster"


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


async def envelopes_until(pubsub, marker: bytes, timeout: float = 5.0) -> list[bytes]:
    """The messages ``pubsub`` receives, up to the first containing ``marker``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[bytes] = []
    while not seen or marker not in seen[-1]:
        left = deadline - loop.time()
        assert left > 0, f"no message with {marker!r} (got {seen})"
        # None also for an (ignored) subscribe confirmation: read on until the deadline
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if msg is not None:
            seen.append(msg["data"])
    return seen


async def test_alone_in_a_room_a_node_publishes_only_once_another_listens(
    valkey, server_factory
) -> None:
    """A node alone in a room writes history but publishes no envelope (it would only come
    back to itself); once another subscriber of the room channel exists (here a plain
    SUBSCRIBE, as a node of an older version does it), every flush publishes again."""
    import redis.asyncio as aioredis

    n1 = await server_factory("n1", redis={"url": valkey.url}, danmaku={"rate_capacity": 100.0})
    keys = n1.app[DANMAKU].hub.keys
    r = aioredis.from_url(valkey.url)
    watch = r.pubsub()  # PSUBSCRIBE: sees every publication, not counted by PUBSUB NUMSUB
    await watch.psubscribe(keys.channel("*"))
    other = r.pubsub()
    a = await join(n1, ROOM, "alice")
    try:
        assert (await a.call("comment", "alone"))["ok"]

        async def in_history(text: str) -> bool:
            return any(text.encode() in e for e in await r.lrange(keys.history(ROOM), 0, -1))

        deadline = asyncio.get_running_loop().time() + 5
        while not await in_history("alone"):  # the script that decided not to publish ran
            assert asyncio.get_running_loop().time() < deadline, "'alone' never reached history"
            await asyncio.sleep(0.01)
        writer = n1.app[DANMAKU].hub.writer
        # alone (seen by the writer once the script's answer is back): it may gather longer
        await wait_until(lambda: writer._listened.get(ROOM) is False, what="room alone")
        # an envelope from another node says it is there: no more gathering for the room
        await r.publish(keys.channel(ROOM), '{"n":"0ther0","j":[1],"t":0}')
        await wait_until(lambda: writer._listened.get(ROOM) is True, what="other node heard")
        await other.subscribe(keys.channel(ROOM))
        assert (await a.call("comment", "heard"))["ok"]
        seen = await envelopes_until(watch, b"heard")
        # publications arrive in order: had 'alone' been published, it would be in `seen`
        assert not any(b"alone" in m for m in seen), seen
        assert b"alone" not in b"".join(await envelopes_until(other, b"heard"))
        # listened: back to the 10 ms window
        await wait_until(lambda: writer._listened.get(ROOM) is True, what="room listened")
        # the node dropped nothing of its own: both comments reached its viewer
        await wait_until(lambda: {"alone", "heard"} <= set(a.texts), what="local delivery")
    finally:
        await a.close()
        await watch.aclose()
        await other.aclose()
        await r.aclose()
