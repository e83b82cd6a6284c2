"""The hub with real Socket.IO clients against a real server (embedded valkey)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import socketio

from bench.danmaku import eio
from danmaku.service import DANMAKU
from tests.danmaku.helpers import NS, Viewer, join, staff_api, token, wait_until

ROOM = "live/shop1"


def hub_of(server):
    return server.app[DANMAKU].hub


async def test_comments_are_merged_per_tick_and_likes_aggregated(server_factory) -> None:
    server = await server_factory(danmaku={"tick_ms": 400, "rate_capacity": 50.0})
    a = await join(server, ROOM, "alice")
    b = await join(server, ROOM, "bob")
    anon = await join(server, ROOM)
    assert anon.of("joined")[0]["you"]["role"] == "anonymous"
    acks = await asyncio.gather(*(a.call("comment", {"text": f"hi {i}"}) for i in range(5)))
    assert all(ack["ok"] for ack in acks) and len({ack["id"] for ack in acks}) == 5
    for _ in range(20):
        await a.call("like", {"count": 5})
    await wait_until(lambda: len(b.texts) == 5, what="5 comments at bob")
    await wait_until(
        lambda: sum(x["likes"]["delta"] for x in b.of("comments") if "likes" in x) == 100,
        what="100 likes",
    )
    batches_with_comments = [x for x in b.of("comments") if x["comments"]]
    assert len(batches_with_comments) <= 2  # one tick (or two if a tick boundary fell inside)
    like_batches = [x["likes"] for x in b.of("comments") if "likes" in x]
    assert len(like_batches) <= 3  # 20 like messages, never one event per like
    assert like_batches[-1]["total"] == 100
    first = b.comments[0]
    assert set(first) == {"id", "user", "nick", "text", "ts", "role"}
    assert (first["user"], first["nick"], first["role"]) == ("alice", "nick-alice", "viewer")
    assert sorted(b.texts) == sorted(f"hi {i}" for i in range(5))
    assert anon.texts == b.texts  # anonymous viewers read ...
    ack = await anon.call("comment", "me too")  # ... but cannot write
    assert ack == {
        "ok": False,
        "error": {"code": "not_authenticated", "message": ack["error"]["message"]},
    }
    assert (await anon.call("like"))["error"]["code"] == "not_authenticated"
    presence = [x["presence"] for x in b.of("comments") if "presence" in x]
    assert presence and presence[-1]["online"] == 3
    for v in (a, b, anon):
        await v.close()


async def test_history_on_join_and_resume_from_last_seen(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 50.0, "history_size": 8})
    a = await join(server, ROOM, "alice")
    ids = [(await a.call("comment", f"c{i}"))["id"] for i in range(10)]
    await wait_until(lambda: len(a.texts) == 10, what="own comments back")
    fresh = await join(server, ROOM, "carol")
    hist = fresh.of("joined")[0]
    assert [c["text"] for c in hist["history"]] == [f"c{i}" for i in range(2, 10)]
    assert hist["gap"] is False
    resumed = await join(server, ROOM, "dave", last_id=ids[6])
    j = resumed.of("joined")[0]
    assert [c["text"] for c in j["history"]] == ["c7", "c8", "c9"] and j["gap"] is False
    too_old = await join(server, ROOM, "erin", last_id=ids[0])
    j = too_old.of("joined")[0]
    assert j["gap"] is True and [c["text"] for c in j["history"]][-1] == "c9"
    # another room is separate
    other = await join(server, "live/other", "frank")
    assert other.of("joined")[0]["history"] == []
    for v in (a, fresh, resumed, too_old, other):
        await v.close()


@pytest.mark.parametrize(
    "auth, code",
    [
        ({"room": ROOM, "token": "v1.nonsense.sig"}, "bad_signature"),
        ({"room": ROOM, "token": token("u", ttl=-5)}, "token_expired"),
        ({"room": ROOM, "token": 42}, "bad_auth"),
        ({"token": token("u")}, "bad_room"),
        ({"room": "has space"}, "bad_room"),
        ({"room": "x" * 500}, "bad_room"),
        (None, "bad_auth"),
    ],
)
async def test_connection_refused_with_reason(server, auth, code) -> None:
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server.http_url, namespaces=[NS], auth=auth, transports=["websocket"], wait_timeout=5
        )
    assert hub_of(server).stats.refused == 1
    with pytest.raises(ConnectionRefusedError) as raw:
        await eio.connect("127.0.0.1", server.runtime.http_port, auth)
    assert raw.value.args[0]["data"]["code"] == code
    await client.disconnect()


async def test_refusal_reason_is_visible_at_protocol_level(server) -> None:
    with pytest.raises(ConnectionRefusedError) as exc:
        await eio.connect(
            "127.0.0.1", server.runtime.http_port, {"room": ROOM, "token": token("u", ttl=-5)}
        )
    err = exc.value.args[0]
    assert err == {"message": "token expired", "data": {"code": "token_expired"}}


async def test_rate_limit_and_word_filter(server_factory) -> None:
    server = await server_factory(
        danmaku={"rate_capacity": 3.0, "rate_per_s": 0.001, "sensitive_words": ("scam", "骗子")}
    )
    a = await join(server, ROOM, "alice")
    b = await join(server, ROOM, "bob")
    ack = await a.call("comment", "this is a SCAM, 骗 子!")
    assert ack["ok"] and ack["filtered"] is True
    assert (await a.call("comment", "two"))["ok"]
    assert (await a.call("comment", "three"))["ok"]
    limited = await a.call("comment", "four")
    assert limited["error"]["code"] == "rate_limited" and limited["error"]["retry_after"] > 0
    await wait_until(lambda: a.of("rejected"), what="rejected event")
    assert a.of("rejected")[0]["event"] == "comment"
    assert (await b.call("comment", "bob is fine"))["ok"]  # limits are per user
    await wait_until(lambda: len(b.texts) == 4, what="4 comments")
    assert b.texts[0] == "this is a ****, ***!"
    assert "four" not in b.texts
    await a.close()
    await b.close()


async def test_bad_payloads_get_clear_errors_and_disturb_no_one(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 100.0, "max_message_bytes": 4096})
    bad = await join(server, ROOM, "mallory")
    good = await join(server, ROOM, "alice")
    watcher = await join(server, ROOM, "bob")
    cases = [
        ("comment", 12345, "bad_payload"),
        ("comment", {"text": ["list"]}, "bad_payload"),
        ("comment", {"text": "x", "admin": True}, "bad_payload"),
        ("comment", "x" * 1000, "too_long"),
        ("comment", "lone \ud800 surrogate", "bad_encoding"),
        ("comment", "\u202e\u0000  ", "empty"),
        ("like", "many", "bad_payload"),
        ("like", {"count": 10**9}, "bad_payload"),
        ("moderate", {"action": "ban", "user_id": "alice"}, "forbidden"),
        ("lottery_enter", {"lottery_id": 5}, "bad_payload"),
        ("lottery_enter", {"lottery_id": "nope"}, "not_found"),
        ("no_such_event", {}, "unknown_event"),
    ]
    for event, data, code in cases:
        ack = await bad.call(event, data)
        assert ack["ok"] is False and ack["error"]["code"] == code, (event, ack)
        assert ack["error"]["message"]
    # two arguments, binary payload
    fut = asyncio.get_running_loop().create_future()
    await bad.sio.emit("comment", ("a", "b"), namespace=NS, callback=lambda r: fut.set_result(r))
    assert (await asyncio.wait_for(fut, 5))["error"]["code"] == "bad_payload"
    ack = await bad.call("comment", b"\xff\xfe binary")
    assert ack["error"]["code"] == "bad_payload"
    # a message over max_message_bytes closes only that connection
    huge = Viewer()
    await huge.connect(server.http_url, {"room": ROOM, "token": token("huge")})
    errors = socketio.exceptions
    with pytest.raises((errors.TimeoutError, errors.DisconnectedError, errors.BadNamespaceError)):
        await huge.call("comment", "y" * 10000, timeout=3)
    await wait_until(lambda: not huge.sio.connected, what="huge sender dropped")
    # invalid UTF-8 in a text frame, sent at protocol level: that connection is closed
    raw = await eio.connect(
        "127.0.0.1", server.runtime.http_port, {"room": ROOM, "token": token("raw")}
    )
    raw.send_raw(b'42/live,["comment","\xff\xfe\xfd"]')
    code = await asyncio.wait_for(raw.closed, 5)
    assert code in (1007, None)
    # garbage Socket.IO packets on a live connection
    raw2 = await eio.connect(
        "127.0.0.1", server.runtime.http_port, {"room": ROOM, "token": token("raw2")}
    )
    for junk in (b"4", b"42/live,", b"42/live,{", b"42/live,[1,2]", b"9zz", b'42/live,["comment"'):
        raw2.send_raw(junk)
    # everyone else is fine
    ack = await good.call("comment", "still here")
    assert ack["ok"]
    await wait_until(lambda: "still here" in watcher.texts, what="good comment delivered")
    assert watcher.sio.connected and good.sio.connected
    assert watcher.texts == ["still here"]
    raw2.close()
    for v in (bad, good, watcher):
        await v.close()


async def test_moderation_actions_audited(server_factory) -> None:
    server = await server_factory(danmaku={"rate_capacity": 100.0})
    mod = await join(server, ROOM, "mod1", role="moderator")
    anchor = await join(server, ROOM, "anchor1", role="anchor")
    v = await join(server, ROOM, "viewer1")
    w = await join(server, ROOM, "viewer2")
    assert (await w.call("moderate", {"action": "mute", "user_id": "viewer1"}))["error"][
        "code"
    ] == "forbidden"
    assert (await anchor.call("moderate", {"action": "mute", "user_id": "viewer1"}))["error"][
        "code"
    ] == "forbidden"
    # mute
    r = await mod.call("moderate", {"action": "mute", "user_id": "viewer1", "duration_s": 600})
    assert r["ok"] and r["until"] > time.time()
    err = (await v.call("comment", "let me talk"))["error"]
    assert err["code"] == "muted" and err["until"] > time.time()
    await wait_until(lambda: v.of("moderated"), what="muted user told")
    assert v.of("moderated")[0]["action"] == "mute"
    assert (await mod.call("moderate", {"action": "unmute", "user_id": "viewer1"}))["ok"]
    assert (await v.call("comment", "thanks"))["ok"]
    # delete
    cid = (await w.call("comment", "spam spam"))["id"]
    await wait_until(lambda: "spam spam" in v.texts, what="spam delivered")
    assert (await mod.call("moderate", {"action": "delete", "comment_id": cid}))["ok"]
    await wait_until(
        lambda: any(cid in x.get("deleted", []) for x in v.of("comments")), what="deletion"
    )
    late = await join(server, ROOM, "late")
    assert cid not in [c["id"] for c in late.of("joined")[0]["history"]]
    # slow mode: viewers wait, moderators do not
    assert (await mod.call("moderate", {"action": "slow_mode", "duration_s": 30}))["ok"]
    assert (await w.call("comment", "one"))["ok"]
    err = (await w.call("comment", "two"))["error"]
    assert err["code"] == "slow_mode" and 0 < err["retry_after"] <= 30
    assert (await mod.call("comment", "mods are exempt"))["ok"]
    assert (await mod.call("comment", "twice"))["ok"]
    await wait_until(
        lambda: any(n["type"] == "room_state" for n in v.notices), what="room_state notice"
    )
    assert (await mod.call("moderate", {"action": "slow_mode", "duration_s": 0}))["ok"]
    # room mute
    assert (await mod.call("moderate", {"action": "room_mute"}))["ok"]
    assert (await v.call("comment", "hello?"))["error"]["code"] == "room_muted"
    assert (await anchor.call("comment", "anchor speaks"))["ok"]
    assert (await mod.call("moderate", {"action": "room_unmute"}))["ok"]
    assert (await v.call("comment", "hello!"))["ok"]
    # ban: kicked now, refused later
    assert (await mod.call("moderate", {"action": "ban", "user_id": "viewer2", "reason": "abuse"}))[
        "ok"
    ]
    await wait_until(lambda: not w.sio.connected, what="banned user disconnected")
    assert w.of("kicked")[0]["reason"] == "banned"
    with pytest.raises(ConnectionRefusedError) as exc:
        await eio.connect(
            "127.0.0.1", server.runtime.http_port, {"room": ROOM, "token": token("viewer2")}
        )
    assert exc.value.args[0]["data"]["code"] == "banned"
    # REST moderation (as a signed-in moderator), the audit log
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, body = await api.call(
            "POST",
            "/api/danmaku/moderation",
            "moderator",
            json={"room": ROOM, "action": "unban", "user_id": "viewer2"},
        )
        assert status == 200, body
        status, body = await api.call("POST", "/api/danmaku/moderation", json={"room": ROOM})
        assert status == 400 and body["error"]["code"] == "bad_action"
        status, body = await api.call("POST", "/api/danmaku/moderation", "anchor", json={})
        assert status == 403  # anchors do not moderate
        status, body = await api.call("GET", f"/api/danmaku/audit?room={ROOM}", "moderator")
        assert status == 200
        entries = body["entries"]
    actions = [(e["action"], e["actor"]) for e in entries]
    assert actions[0] == ("unban", "moderator1")
    assert entries[0]["actor_role"] == "moderator" and entries[0]["via"] == "api"
    assert ("ban", "mod1") in actions and ("delete", "mod1") in actions
    assert ("mute", "mod1") in actions and ("room_mute", "mod1") in actions
    ban = next(e for e in entries if e["action"] == "ban")
    assert ban["target"] == "viewer2" and ban["detail"]["reason"] == "abuse"
    assert ban["actor_role"] == "moderator" and float(ban["ts"]) > 0
    back = await join(server, ROOM, "viewer2")
    assert back.sio.connected
    for c in (mod, anchor, v, late, back):
        await c.close()


async def test_notices_from_the_bus_arrive_in_batches(server) -> None:
    v = await join(server, "live/s42", "alice")
    bus = server.runtime.bus
    await bus.publish(
        "stream.published",
        {"app": "live", "stream": "s42", "node": "n1", "client_ip": "10.1.2.3", "video": {}},
    )
    await bus.publish("card.pushed", {"room": "live/s42", "product_id": 7, "title": "Tea"})
    await bus.publish("flash_sale.started", {"app": "live", "stream": "s42", "sale_id": 1})
    await bus.publish("card.pushed", {"room": "live/elsewhere", "product_id": 8})
    await bus.publish("order.paid", {"room": "live/s42", "order_id": 1})  # not a notice topic
    await wait_until(lambda: len(v.notices) == 3, what="3 notices")
    types = [n["type"] for n in v.notices]
    assert types == ["live_start", "card.pushed", "flash_sale.started"]
    assert "client_ip" not in v.notices[0]["data"] and v.notices[0]["data"]["stream"] == "s42"
    assert v.notices[1]["data"] == {"room": "live/s42", "product_id": 7, "title": "Tea"}
    await bus.publish("stream.unpublished", {"app": "live", "stream": "s42", "reason": "eof"})
    await wait_until(lambda: len(v.notices) == 4, what="live_end")
    assert v.notices[3]["type"] == "live_end"
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, _ = await api.call(
            "POST", "/api/danmaku/notices", json={"room": "live/s42", "text": "Hi all"}
        )
        assert status == 200
    await wait_until(lambda: len(v.notices) == 5, what="announcement")
    assert v.notices[4]["type"] == "announcement" and v.notices[4]["data"]["text"] == "Hi all"
    await v.close()


async def test_overload_is_sampled_but_anchor_messages_are_kept(server_factory) -> None:
    server = await server_factory(
        danmaku={"tick_ms": 300, "batch_max_comments": 5, "rate_capacity": 100.0}
    )
    watcher = await join(server, ROOM, "watcher")
    senders = [await join(server, ROOM, f"s{i}") for i in range(4)]
    anchor = await join(server, ROOM, "anchor1", role="anchor")
    hub = hub_of(server)
    # many comments inside one tick
    await asyncio.gather(
        *(s.call("comment", f"{s_i}-{k}") for s_i, s in enumerate(senders) for k in range(15)),
        anchor.call("comment", "ANCHOR SAYS"),
    )
    await wait_until(lambda: "ANCHOR SAYS" in watcher.texts, what="anchor message")
    await wait_until(lambda: hub.stats.comments_in == 61, what="all accepted")

    def sampled() -> list[dict]:
        return [b["sample"] for b in watcher.of("comments") if "sample" in b]

    def accounted() -> int:  # delivered + reported as sampled out
        got = [t for t in watcher.texts if t != "ANCHOR SAYS"]
        return len(got) + sum(s["seen"] - s["kept"] for s in sampled())

    await wait_until(lambda: accounted() >= 60, what="every comment delivered or sampled out")
    assert sampled(), "overload must be reported"
    for s in sampled():
        assert s["kept"] == 5 and s["seen"] > 5 and s["rate"] == round(5 / s["seen"], 4)
    assert accounted() == 60
    assert hub.stats.sampled_out == sum(s["seen"] - s["kept"] for s in sampled())
    for c in (watcher, anchor, *senders):
        await c.close()


async def test_stats_endpoint_and_counters_for_control(server_factory) -> None:
    server = await server_factory(danmaku={"presence_interval_s": 0.3})
    seen: list = []
    bus = server.runtime.bus
    bus.subscribe("danmaku.*", lambda e: seen.append((e.topic, e.data)))
    await bus.publish("broadcast.created", {"id": 5, "app": "live", "stream": "shop1"})
    v = await join(server, ROOM, "alice")
    await v.call("comment", "x")
    await v.call("comment", "y")
    await v.call("like", {"count": 9})
    await wait_until(lambda: len(seen) >= 2, what="counter events")
    assert ("danmaku.comment", {"room": ROOM, "count": 2, "broadcast_id": 5}) in seen
    assert ("danmaku.like", {"room": ROOM, "count": 9, "broadcast_id": 5}) in seen
    async with aiohttp.ClientSession() as session:
        api = await staff_api(server, session)
        status, body = await api.call("GET", "/api/danmaku/stats")
        assert status == 200
        status, _ = await api.call("GET", "/api/danmaku/stats", "moderator")
        assert status == 403
    assert body["comments_in"] == 2 and body["rooms"][ROOM]["local_members"] == 1
    assert body["redis_connected"] is True
    await v.close()


async def test_history_writes_survive_a_flushed_script_cache(server_factory) -> None:
    server = await server_factory()
    hub = hub_of(server)
    a = await join(server, ROOM, "alice")
    assert (await a.call("comment", "before"))["ok"]
    key = hub.keys.history(ROOM)
    await wait_until(lambda: hub.stats.comments_in == 1, what="accepted")
    for _ in range(500):
        if len(await hub.redis.lrange(key, 0, -1)) == 1:
            break
        await asyncio.sleep(0.01)
    await hub.redis.script_flush()  # what a Redis restart without the cache looks like
    assert (await a.call("comment", "after"))["ok"]
    for _ in range(500):
        if len(await hub.redis.lrange(key, 0, -1)) == 2:
            break
        await asyncio.sleep(0.01)
    texts = [json.loads(x)["text"] for x in await hub.redis.lrange(key, 0, -1)]
    assert texts == ["before", "after"]
    assert hub.stats.redis_errors == 0 and hub.stats.lost_history_comments == 0
    await a.close()
