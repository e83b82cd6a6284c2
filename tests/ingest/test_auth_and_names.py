"""Push-URL verification never raises on what a client sends, and RTMP play names are
checked before any lookup (on an edge a lookup starts a pull from an origin)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import auth
from ingest.rtmp_server import KeyVersionUnknown
from media.rtmp.client import ClientConnection, CommandReply
from tests.conftest import TEST_SECRET


def test_non_ascii_signature_is_refused_not_raised() -> None:
    now = time.time()
    query = auth.push_query(TEST_SECRET, "live", "s", int(now) + 60)
    good = auth.verify(TEST_SECRET, "live", "s", query, now)
    assert good.ok
    forged = query.rsplit("sign=", 1)[0] + "sign=%C3%A9%E4%B8%AD"
    result = auth.verify(TEST_SECRET, "live", "s", forged, now)
    assert not result.ok and "signature" in result.reason
    tx = auth.verify(TEST_SECRET, "live", "s", "txSecret=%E4%B8%AD&txTime=FF", now, "key")
    assert not tx.ok and "txSecret" in tx.reason


def test_tencent_urls_only_for_their_app_and_until_a_rotation() -> None:
    now = time.time()
    secret, tx_time = auth.tencent_sign("tkey", "s", int(now) + 60)
    query = f"txSecret={secret}&txTime={tx_time}"
    assert auth.verify(TEST_SECRET, "live", "s", query, now, "tkey").ok
    other_app = auth.verify(TEST_SECRET, "shop2", "s", query, now, "tkey")
    assert not other_app.ok and "app" in other_app.reason
    rotated = auth.verify(TEST_SECRET, "live", "s", query, now, "tkey", key_version="2")
    assert not rotated.ok and "revoked" in rotated.reason


async def test_rotated_key_stays_enforced_while_redis_is_unreachable(server) -> None:
    """The key version is read from Redis at each publish; when Redis can't be read, the
    last version read for that stream applies, and a stream never read is refused."""
    import redis.asyncio as aioredis

    from ingest import RTMP_SERVER

    rtmp = server.app[RTMP_SERVER]
    await server.runtime.redis.hset(auth.KEY_VERSIONS, "live/rot", "7")
    assert await rtmp.key_version("live", "rot") == "7"
    # a real client to a port nothing listens on: every command fails to connect
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    rtmp.redis = aioredis.Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=1)
    try:
        assert await rtmp.key_version("live", "rot") == "7"
        with pytest.raises(KeyVersionUnknown):
            await rtmp.key_version("live", "never_seen")
    finally:
        await rtmp.redis.aclose()


@given(st.text(max_size=300))
def test_verify_answers_any_query(query: str) -> None:
    result = auth.verify(TEST_SECRET, "live", "s", query, 1_700_000_000.0, "key", "3")
    assert isinstance(result.ok, bool) and (result.ok or result.reason)


async def _play(port: int, name: str) -> tuple[list[str], bool]:
    """Play ``name`` over RTMP; the onStatus "code: description" lines received and
    whether the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = ClientConnection()
    client.connect("live", f"rtmp://127.0.0.1:{port}/live")
    client.create_stream()
    client.play(1, name)
    writer.write(client.data_to_send())
    codes: list[str] = []
    closed = False
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                closed = True
                break
            for event in client.receive_data(data):
                if isinstance(event, CommandReply) and event.name == "onStatus":
                    info = event.info
                    codes.append(f"{info.get('code')}: {info.get('description')}")
            writer.write(client.data_to_send())
    except TimeoutError:  # an OSError too: not a close
        raise AssertionError(f"the server neither answered nor closed: {codes}") from None
    except (ConnectionError, OSError):
        closed = True
    finally:
        writer.close()
    return codes, closed


async def test_invalid_play_name_is_refused_before_lookup(server) -> None:
    for name in ("../../etc/x", "a" * 200, "名字"):
        codes, closed = await _play(server.runtime.rtmp_port, name)
        assert closed and len(codes) == 1 and "invalid stream name" in codes[0], codes
    codes, closed = await _play(server.runtime.rtmp_port, "valid_but_not_live")
    assert closed and "is not live" in codes[0]
