from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.config import ConfigError, load_config
from core.bus import InProcessBus


async def test_healthz_reports_embedded_redis(server, aiohttp_client_session=None) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(server.http_url + "/healthz") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "ok"
    assert body["redis"] is True
    assert await server.runtime.redis.ping()


def test_config_env_and_toml(tmp_path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[server]\nhttp_port = 9000\n[relay]\ngop_max_frames = 7\n")
    env = {"BERRYLIVE_SERVER_HTTP_PORT": "9100", "BERRYLIVE_SECRET": "s3"}
    cfg = load_config(toml, env=env, data_dir=str(tmp_path))
    assert cfg.server.http_port == 9100  # env beats file
    assert cfg.relay.gop_max_frames == 7
    assert cfg.server.secret == "s3"


def test_config_rejects_typos(tmp_path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[relay]\ngop_max_frame = 7\n")
    with pytest.raises(ConfigError, match="gop_max_frame"):
        load_config(toml, env={}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, env={"BERRYLIVE_SERVER_HTTP_PORT": "x"}, data_dir=str(tmp_path))


def test_secret_is_created_once(tmp_path) -> None:
    a = load_config(None, env={}, data_dir=str(tmp_path))
    b = load_config(None, env={}, data_dir=str(tmp_path))
    assert a.server.secret and a.server.secret == b.server.secret


async def test_bus_delivers_by_pattern_and_isolates_failures() -> None:
    bus = InProcessBus()
    seen: list[str] = []

    def bad(event) -> None:
        raise RuntimeError("boom")

    bus.subscribe("stream.*", bad)
    bus.subscribe("stream.*", lambda e: seen.append(e.topic))
    await bus.publish("stream.published", {"name": "a"})
    await bus.publish("order.paid", {})
    await bus.drain()
    assert seen == ["stream.published"]
    await bus.close()


async def test_bus_subscribers_added_or_removed_after_a_topic_was_seen() -> None:
    """The per-topic subscriber lists follow subscribe / unsubscribe."""
    bus = InProcessBus()
    first: list[int] = []
    later: list[int] = []
    unsub = bus.subscribe("order.*", lambda e: first.append(e.data["n"]))
    await bus.publish("order.created", {"n": 1})
    bus.subscribe("*", lambda e: later.append(e.data["n"]))
    await bus.publish("order.created", {"n": 2})
    await bus.drain()  # unsubscribing stops the subscriber's task
    unsub()
    await bus.publish("order.created", {"n": 3})
    await bus.drain()
    assert first == [1, 2]
    assert later == [2, 3]
    await bus.close()


async def test_publish_many_reaches_local_and_remote_subscribers_in_order(server) -> None:
    import asyncio

    from core.bus import RedisBus

    a = RedisBus(server.runtime.redis, node="a")
    b = RedisBus(server.runtime.redis, node="b")
    await a.start()
    await b.start()
    local: list[int] = []
    remote: list[int] = []
    a.subscribe("order.*", lambda e: local.append(e.data["n"]))
    b.subscribe("order.*", lambda e: remote.append(e.data["n"]))
    events = await a.publish_many([("order.created", {"n": i}) for i in range(50)])
    assert [e.data["n"] for e in events] == list(range(50)) and a.published == 50
    async with asyncio.timeout(10):
        while len(remote) < 50:
            await asyncio.sleep(0.01)
    await a.drain()
    assert local == list(range(50)) and remote == list(range(50))
    assert a.lost_remote == 0
    await a.close()
    await b.close()


async def test_redis_bus_batches_skips_own_channel_and_survives_garbage(server) -> None:
    import asyncio

    from core.bus import CHANNEL_PREFIX, RedisBus

    redis = server.runtime.redis
    a = RedisBus(redis, node="a2")
    b = RedisBus(redis, node="b2")
    await a.start()
    await b.start()
    remote: list[tuple[str, int]] = []
    local: list[int] = []
    a.subscribe("order.*", lambda e: local.append(e.data["n"]))
    b.subscribe("order.*", lambda e: remote.append((e.node, e.data["n"])))
    # garbage from a broken or foreign publisher is dropped; the listener keeps going
    for raw in (b"\xff\x00not json", b"[1, {}]", b'{"topic": 5}', b"[]"):
        assert await redis.publish(CHANNEL_PREFIX + "from:x", raw) >= 1
    # a single event object (as nodes sent before batching) still arrives
    one = b'{"topic": "order.created", "data": {"n": -1}, "id": "i", "ts": 1.0, "node": "old"}'
    await redis.publish(CHANNEL_PREFIX + "order.created", one)
    n = a.MESSAGE_EVENTS + 10  # more than one message's worth
    await a.publish_many([("order.created", {"n": i}) for i in range(n)])
    async with asyncio.timeout(10):
        while len(remote) < n + 1:
            await asyncio.sleep(0.01)
    await a.drain()
    assert remote == [("old", -1)] + [("a2", i) for i in range(n)]
    # a's own messages were not delivered to it a second time through Redis
    assert sorted(local) == list(range(-1, n))
    await a.close()
    await b.close()


def test_decode_events_formats() -> None:
    from core.bus import Event, decode_events, encode_events

    evs = [Event("a.b", {"k": [1, 2]}, node="n"), Event("c", {1: 2**70}, node="n")]
    back, bad = decode_events(encode_events(evs))
    assert bad == 0 and [(e.topic, e.data, e.id, e.node) for e in back] == [
        ("a.b", {"k": [1, 2]}, evs[0].id, "n"),
        ("c", {"1": 2**70}, evs[1].id, "n"),  # non-str keys and big ints still encode
    ]
    assert decode_events(b'{"topic": "t", "data": {}}')[0][0].topic == "t"
    assert decode_events(b"nope") == ([], 1)
    got, bad = decode_events(b'[{"topic": "t", "data": {}}, {"topic": "t", "data": 3}, 7]')
    assert len(got) == 1 and bad == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_decode_events_never_raises(raw: bytes) -> None:
    from core.bus import decode_events

    events, bad = decode_events(raw)
    assert bad >= 0 and all(isinstance(e.data, dict) for e in events)
