"""Anonymous sockets cannot open rooms (issue 17 item 10): without a token a socket joins
only a room that exists (a broadcast's, a live stream's, or one open with members), so a
flood of anonymous sockets naming made-up rooms opens none and real rooms never get busy."""

from __future__ import annotations

import pytest

from bench.danmaku import eio
from danmaku.service import DANMAKU
from tests.danmaku.helpers import join, wait_until

ROOM = "live/known"


async def refused_code(server, auth) -> str:
    with pytest.raises(ConnectionRefusedError) as raw:
        await eio.connect("127.0.0.1", server.runtime.http_port, auth)
    return str(raw.value.args[0]["data"]["code"])


async def test_anonymous_sockets_open_no_room(server_factory) -> None:
    server = await server_factory(danmaku={"max_rooms": 5})
    hub = server.app[DANMAKU].hub
    # a flood naming made-up rooms: each refused, none opened
    for i in range(20):
        assert await refused_code(server, {"room": f"live/made-up-{i}"}) == "unknown_room"
    assert hub.rooms == {}
    # the real room still opens for a viewer with a token, and then takes anonymous viewers
    viewer = await join(server, ROOM, "v1")
    anon = await join(server, ROOM)
    assert anon.of("joined")[0]["you"]["user"] is None
    await anon.close()
    await viewer.close()


async def test_broadcasts_and_live_streams_make_rooms_exist(server_factory) -> None:
    server = await server_factory()
    bus = server.runtime.bus
    assert await refused_code(server, {"room": "live/show"}) == "unknown_room"
    await bus.publish("stream.published", {"app": "live", "stream": "show", "node": "n"})
    svc = server.app[DANMAKU]

    async def known(room: str) -> bool:
        return await svc.known_rooms.exists(room)

    await wait_for(lambda: known("live/show"))
    anon = await join(server, "live/show")
    await anon.close()

    await bus.publish(
        "broadcast.created",
        {"id": 7, "app": "live", "stream": "friday", "state": "scheduled"},
    )
    await wait_for(lambda: known("live/friday"))
    await bus.publish(
        "broadcast.banned",
        {"id": 7, "app": "live", "stream": "friday", "state": "banned"},
    )
    await wait_for(lambda: _not(known("live/friday")))
    svc.known_rooms._seen.clear()  # another node: nothing cached
    assert await refused_code(server, {"room": "live/friday"}) == "unknown_room"


async def test_any_room_when_configured(server_factory) -> None:
    server = await server_factory(danmaku={"anonymous_rooms": "any"})
    anon = await join(server, "live/whatever")
    await wait_until(lambda: anon.of("joined"))
    await anon.close()


async def _not(value) -> bool:
    return not await value


async def wait_for(cond, timeout: float = 10.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
