"""The embedded valkey-server is supervised: killed (SIGKILL, as the OOM killer does), it is
started again on the same socket with its data; never after stop(); and a server that
cannot start is retried with a growing back-off, not in a tight loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis.exceptions as redis

from core.redis import EmbeddedValkey, connect


def _valkeys_on(vdir: Path) -> list[int]:
    """Pids of the valkey-servers working in ``vdir`` (whoever started them)."""
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if "valkey" in (p.info["name"] or "") and Path(p.cwd()) == vdir:
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


async def _until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def _aof_holds(vk: EmbeddedValkey, needle: bytes) -> None:
    """Wait until the append-only file (valkey writes it before answering; fsync later)
    holds ``needle``."""

    def holds() -> bool:
        return any(needle in f.read_bytes() for f in vk.dir.glob("appendonlydir/*.aof"))

    await _until(holds)


def _kill(pid: int) -> None:
    psutil.Process(pid).kill()  # SIGKILL


async def test_a_killed_valkey_is_restarted_on_the_same_url_with_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vk = EmbeddedValkey(tmp_path, persist=True)
    await vk.start()
    client = connect(vk.url)  # berrylive's own client: it must reconnect by itself
    try:
        await client.set(b"stock:7", b"41")
        await _aof_holds(vk, b"stock:7")
        first_run = (await client.info("server"))["run_id"]
        pid = vk.pid
        assert pid is not None and _valkeys_on(vk.dir) == [pid]
        with caplog.at_level(logging.WARNING, logger="core.redis"):
            _kill(pid)
            await _until(lambda: vk.restarts == 1)
        assert vk.pid not in (None, pid) and _valkeys_on(vk.dir) == [vk.pid]
        assert await client.ping()
        assert await client.get(b"stock:7") == b"41"
        assert (await client.info("server"))["run_id"] != first_run
        assert vk.restart_attempts == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        # the exit is reported with the tail of valkey.log (what the server said last)
        assert any("exited with -9" in m and "valkey.log" in m and "|" in m for m in errors)
        # a second death is survived as well
        pid2 = vk.pid
        assert pid2 is not None
        _kill(pid2)
        await _until(lambda: vk.restarts == 2)
        assert await client.get(b"stock:7") == b"41"
    finally:
        await client.aclose()
        await vk.stop()
    assert _valkeys_on(vk.dir) == []


async def test_no_restart_after_stop(tmp_path: Path) -> None:
    vk = EmbeddedValkey(tmp_path, persist=False)
    await vk.start()
    pid = vk.pid
    assert pid is not None
    await vk.stop()
    assert vk.pid is None and _valkeys_on(vk.dir) == []
    # it died and stop() came during the back-off, before the restart
    vk = EmbeddedValkey(tmp_path, persist=False)
    vk.backoff_min = 0.3
    await vk.start()
    pid = vk.pid
    assert pid is not None
    proc = vk._proc
    assert proc is not None
    _kill(pid)
    await _until(lambda: proc.returncode is not None)
    loop = asyncio.get_running_loop()
    died = loop.time()
    await vk.stop()
    # past the moment it would have been restarted: still nothing started
    await _until(lambda: loop.time() > died + 3 * vk.backoff_min)
    assert vk.restart_attempts == 0 and vk.restarts == 0
    assert _valkeys_on(vk.dir) == []


async def test_a_valkey_that_cannot_start_is_retried_with_a_growing_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The append-only file's manifest is damaged after the kill: every start exits at
    once. Attempts come after 0.1, 0.2, 0.4, 0.8 s ...; once the file is put right, the
    next attempt brings the server back with its data."""
    vk = EmbeddedValkey(tmp_path, persist=True)
    await vk.start()
    client = connect(vk.url)
    try:
        await client.set(b"kept", b"yes")
        await _aof_holds(vk, b"kept")
        manifests = list(vk.dir.glob("appendonlydir/*.manifest"))
        assert len(manifests) == 1
        good = manifests[0].read_bytes()
        pid = vk.pid
        assert pid is not None
        loop = asyncio.get_running_loop()
        with caplog.at_level(logging.ERROR, logger="core.redis"):
            _kill(pid)
            # no await in between: the supervisor cannot start it before the damage
            manifests[0].write_bytes(b"this is not a manifest\n")
            killed = loop.time()

            def failed() -> list[str]:
                return [m for r in caplog.records if "did not start again" in (m := r.getMessage())]

            # 4 attempts failed: it now waits 1.6 s with nothing running
            await _until(lambda: len(failed()) >= 4, timeout=30)
            took = loop.time() - killed
        # a tight loop makes 4 attempts in a few milliseconds; the back-off waits
        # 0.1 + 0.2 + 0.4 + 0.8 s before the 4th
        assert took >= 1.5, (took, vk.restart_attempts)
        assert vk.restarts == 0 and vk.pid is None and _valkeys_on(vk.dir) == []
        fails = failed()
        assert len(fails) == 4 and all("exited with" in m for m in fails), fails
        assert [m.split("next in ")[1][:3] for m in fails] == ["0.2", "0.4", "0.8", "1.6"]
        manifests[0].write_bytes(good)
        await _until(lambda: vk.restarts == 1, timeout=30)
        assert await client.get(b"kept") == b"yes"
    finally:
        await client.aclose()
        await vk.stop()
    assert _valkeys_on(vk.dir) == []


async def test_the_back_off_stops_at_its_ceiling_and_stop_ends_the_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vk = EmbeddedValkey(tmp_path, persist=True)
    vk.backoff_min, vk.backoff_max = 0.05, 0.2
    await vk.start()
    pid = vk.pid
    assert pid is not None
    manifests = list(vk.dir.glob("appendonlydir/*.manifest"))
    _kill(pid)
    manifests[0].write_bytes(b"garbage\n")
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.ERROR, logger="core.redis"):
        await _until(lambda: vk.restart_attempts >= 3, timeout=30)
        t3 = loop.time()
        await _until(lambda: vk.restart_attempts >= 8, timeout=30)
    # at the ceiling: at least 0.2 s between attempts, and no longer (0.4, 0.8 ...)
    assert loop.time() - t3 >= 5 * 0.2
    nexts = [
        r.getMessage().split("next in ")[1].split(" s")[0]
        for r in caplog.records
        if "did not start again" in r.getMessage()
    ]
    assert nexts[:2] == ["0.1", "0.2"] and set(nexts[2:]) == {"0.2"}, nexts
    await vk.stop()
    attempts = vk.restart_attempts
    await _until(lambda: loop.time() > t3 + 10 * 0.2 + 1)
    assert vk.restart_attempts == attempts and vk.restarts == 0
    assert _valkeys_on(vk.dir) == []


async def test_a_server_restarts_its_valkey_and_metrics_count_it(server: Any) -> None:
    """A full server (control/app.py's runtime): its valkey killed, it answers again on
    the same URL and ``/metrics`` counts the restart."""
    import aiohttp

    rt = server.runtime
    vk = rt.valkey
    assert isinstance(vk, EmbeddedValkey) and rt.redis_url == vk.url
    pid = vk.pid
    assert pid is not None

    async def restarts(session: aiohttp.ClientSession) -> str:
        async with session.get(server.http_url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        return next(ln for ln in text.splitlines() if ln.startswith("berrylive_valkey_restarts"))

    async with aiohttp.ClientSession() as session:
        assert await restarts(session) == "berrylive_valkey_restarts_total 0.0"
        _kill(pid)
        await _until(lambda: vk.restarts == 1)
        assert await rt.redis.ping()  # the runtime's client, reconnected by itself
        assert await restarts(session) == "berrylive_valkey_restarts_total 1.0"
        async with session.get(server.http_url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["redis"] is True
    assert vk.pid not in (None, pid)


async def test_danmaku_flows_again_after_the_valkey_was_killed(server: Any) -> None:
    """Danmaku fan-out goes through Redis: after the restart a comment reaches the room
    again (the subscriber re-subscribes by itself)."""
    from tests.danmaku.helpers import join, wait_until

    vk = server.runtime.valkey
    assert isinstance(vk, EmbeddedValkey) and vk.pid is not None
    alice = await join(server, "live/vk", "alice")
    bob = await join(server, "live/vk", "bob")
    try:
        assert (await alice.call("comment", {"text": "before"}))["ok"]
        await wait_until(lambda: "before" in bob.texts, what="the comment before the kill")
        _kill(vk.pid)
        await _until(lambda: vk.restarts == 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (ack := await alice.call("comment", {"text": "after"}))["ok"]:
            assert loop.time() < deadline, ack  # refused while Redis comes back: retry
            await asyncio.sleep(0.05)
        await wait_until(lambda: "after" in bob.texts, 30, what="the comment after the restart")
    finally:
        await alice.close()
        await bob.close()


async def test_a_restart_that_reads_a_large_file_back_is_waited_for(tmp_path: Path) -> None:
    """A restart reading back an append-only file for longer than the start timeout is
    not taken for a server that does not start (killed and started again, forever):
    valkey answers PING while loading, and the data is all there afterwards."""
    vk = EmbeddedValkey(tmp_path, persist=True)
    await vk.start()
    client = connect(vk.url)
    try:
        pipe = client.pipeline(transaction=False)
        for b in range(600):
            pipe.mset({f"k{b}:{i}": b"x" for i in range(1000)})
            if b % 100 == 99:
                await pipe.execute()
                pipe = client.pipeline(transaction=False)
        await _aof_holds(vk, b"k599:999")
        vk.start_timeout = 0.3
        pid = vk.pid
        assert pid is not None
        _kill(pid)
        await _until(lambda: vk.restarts == 1, timeout=60)
        assert vk.restart_attempts == 1
        async with asyncio.timeout(60):
            while True:
                try:
                    size = await client.dbsize()
                    break
                except redis.BusyLoadingError:  # still loading: other commands wait
                    await asyncio.sleep(0.05)
        assert size == 600_000
        log = (vk.dir / "valkey.log").read_text()
        took = float(log.rsplit("DB loaded from append only file: ", 1)[1].split()[0])
        assert took > vk.start_timeout, took  # the case this test is about did happen
    finally:
        await client.aclose()
        await vk.stop()
