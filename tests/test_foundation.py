from __future__ import annotations

import pytest

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
