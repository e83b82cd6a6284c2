"""RTMP connection limits on a real server: caps per address and in total, and deadlines
for the handshake and for the first publish/play (issue 17 item 8: one connection sending a
byte every few seconds used to stay forever; no connection cap existed)."""

from __future__ import annotations

import asyncio

from ingest import RTMP_SERVER
from media.rtmp.client import ClientConnection
from media.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from tests.mediautil import wait_for


async def _open(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.runtime.rtmp_port)


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 20.0) -> bool:
    """True when the server closes (EOF or reset) before ``within`` seconds pass."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), within)
            if not data:
                return True
    except TimeoutError:  # first: TimeoutError is an OSError
        return False
    except (ConnectionError, OSError):
        return True


async def test_connections_per_address_are_capped_and_freed(server_factory) -> None:
    server = await server_factory(ingest={"max_connections_per_ip": 3})
    rtmp = server.app[RTMP_SERVER]
    held = [await _open(server) for _ in range(3)]
    await wait_for(lambda: rtmp.per_ip.get("127.0.0.1") == 3)
    reader, writer = await _open(server)
    assert await _closed_by_server(reader, 10)
    assert rtmp.refused == 1
    writer.close()
    # the held ones are untouched: a handshake on one of them still gets S0S1S2
    r0, w0 = held[0]
    w0.write(client_hello())
    await w0.drain()
    s0s1s2 = await asyncio.wait_for(r0.readexactly(1 + 2 * HANDSHAKE_SIZE), 10)
    assert s0s1s2[0] == 3
    # closing one frees its place for a new connection
    held[1][1].close()
    await wait_for(lambda: rtmp.per_ip.get("127.0.0.1") == 2)
    r4, w4 = await _open(server)
    w4.write(client_hello())
    await w4.drain()
    assert (await asyncio.wait_for(r4.readexactly(1 + 2 * HANDSHAKE_SIZE), 10))[0] == 3
    for _, w in [*held, (r4, w4)]:
        w.close()


async def _publish(server, stream: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that completed a publish (NetStream.Publish.Start): an established one."""
    reader, writer, _ = await _start_publish(server, stream)
    return reader, writer


async def _start_publish(
    server, stream: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientConnection]:
    """As :func:`_publish`, with the RTMP client that speaks on it (for what comes next)."""
    import time

    from ingest import auth
    from media.rtmp.client import CommandReply
    from tests.conftest import TEST_SECRET

    port = server.runtime.rtmp_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    query = auth.push_query(TEST_SECRET, "live", stream, int(time.time()) + 60)
    client = ClientConnection()
    client.connect("live", f"rtmp://127.0.0.1:{port}/live")
    client.create_stream()
    client.publish(1, f"{stream}?{query}")
    writer.write(client.data_to_send())
    codes: list[str] = []
    while "NetStream.Publish.Start" not in codes:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, f"closed before the publish started: {codes}"
        codes += [
            str(e.info.get("code"))
            for e in client.receive_data(data)
            if isinstance(e, CommandReply) and e.name == "onStatus"
        ]
        writer.write(client.data_to_send())
    return reader, writer, client


async def test_at_the_total_cap_the_oldest_unstarted_connection_makes_room(
    server_factory, tmp_path
) -> None:
    """A flood of idle connections holds the cap: a real ffmpeg publisher still gets in (the
    oldest connection with no publish/play is closed for it); a started publisher is not."""
    from relay import REGISTRY
    from tests.mediautil import make_clip, start_publisher, stop

    server = await server_factory(ingest={"max_connections": 3, "max_connections_per_ip": 0})
    rtmp = server.app[RTMP_SERVER]
    started = await _publish(server, "first")
    idle = [await _open(server) for _ in range(2)]
    await wait_for(lambda: len(rtmp.sessions) == 3 and len(rtmp.pending) == 2)
    clip = make_clip(tmp_path / "clip.flv", 30.0, gop=30)
    proc = await start_publisher(server.push_url("cap"), clip)
    try:
        registry = server.app[REGISTRY]

        def publishing() -> bool:
            hub = registry.get("live", "cap")
            return hub is not None and hub.publisher is not None

        await wait_for(publishing, 30)
        assert rtmp.evicted == 1 and rtmp.refused == 0
        assert await _closed_by_server(idle[0][0], 10)  # the oldest idle one
        assert len(rtmp.sessions) == 3  # the started one, the younger idle one, ffmpeg
        # the younger idle connection is untouched: a handshake on it still gets S0S1S2
        r1, w1 = idle[1]
        w1.write(client_hello())
        await w1.drain()
        assert (await asyncio.wait_for(r1.readexactly(1 + 2 * HANDSHAKE_SIZE), 10))[0] == 3
        hub = registry.get("live", "first")
        assert hub is not None and hub.publisher is not None  # never a candidate
    finally:
        await stop(proc)
    for _, w in [started, *idle]:
        w.close()


async def test_at_the_total_cap_of_started_connections_a_new_one_is_refused(
    server_factory,
) -> None:
    server = await server_factory(ingest={"max_connections": 2, "max_connections_per_ip": 0})
    rtmp = server.app[RTMP_SERVER]
    held = [await _publish(server, f"s{i}") for i in range(2)]
    await wait_for(lambda: len(rtmp.sessions) == 2 and not rtmp.pending)
    reader, writer = await _open(server)
    assert await _closed_by_server(reader, 10)
    assert rtmp.refused == 1 and rtmp.evicted == 0
    writer.close()
    # the publishers' connections were not touched
    for r, _ in held:
        assert not r.at_eof()
    assert len(rtmp.sessions) == 2
    for _, w in held:
        w.close()


async def test_a_byte_at_a_time_handshake_is_cut_at_the_deadline(server_factory) -> None:
    """Each read comes well within the old per-read timeout; the whole handshake never
    completes, so the deadline from the accept closes the connection."""
    server = await server_factory(ingest={"handshake_timeout": 1.0})
    reader, writer = await _open(server)
    hello = client_hello()

    async def dribble() -> None:
        for b in hello:  # 1537 bytes at one per 0.2 s: ~5 minutes if never cut
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(dribble())
    try:
        assert await _closed_by_server(reader, 20)
    finally:
        sender.cancel()
        writer.close()


async def test_no_publish_or_play_after_the_handshake_is_cut(server_factory) -> None:
    server = await server_factory(ingest={"start_timeout": 1.0})
    rtmp = server.app[RTMP_SERVER]
    reader, writer = await _open(server)
    writer.write(client_hello())
    s0s1s2 = await asyncio.wait_for(reader.readexactly(1 + 2 * HANDSHAKE_SIZE), 10)
    writer.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
    await writer.drain()
    assert await _closed_by_server(reader, 20)
    await wait_for(lambda: len(rtmp.sessions) == 0)
    writer.close()


async def test_no_start_deadline_after_a_publish(server_factory) -> None:
    """ffmpeg unpublishes (deleteStream), then closes: in between, the connection is idle,
    not 'late to publish'. The start deadline applies only before a publish or play."""
    server = await server_factory(ingest={"start_timeout": 1.0})
    reader, writer, client = await _start_publish(server, "sd")
    client.delete_stream(1)
    writer.write(client.data_to_send())
    await writer.drain()
    started = asyncio.get_running_loop().time()
    # well past the 1 s start deadline (the idle timeout is 30 s): still open
    assert not await _closed_by_server(reader, 2.5)
    assert asyncio.get_running_loop().time() - started >= 2.5
    writer.close()
