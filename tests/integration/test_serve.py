"""``berrylive serve`` as a user starts it: a real process, from a fresh working directory,
whatever the data dir (relative, absolute, long, with spaces, not yet made), with the
embedded valkey or with ``REDIS_URL``; it answers ``/healthz`` and, stopped, leaves no
child process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.services import REDIS_ENV

LISTENING = re.compile(rb"http listening on [^:]+:(\d+)")


def berrylive_command() -> list[str]:
    script = Path(sys.executable).parent / "berrylive"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "control.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without berrylive settings (a new user's shell), except the
    WebRTC UDP port: a free one (0), not the default 8189 every server process would bind."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BERRYLIVE_") and k not in ("REDIS_URL", "DATABASE_URL")
    }
    env["BERRYLIVE_WEBRTC_UDP_PORT"] = "0"
    env.update(extra)
    return env


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    http_port: int
    log: bytearray
    drain: asyncio.Future[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


async def serve(cwd: Path, data_dir: str, env: dict[str, str], timeout: float = 60) -> Served:
    """Start ``berrylive serve`` in ``cwd`` on free ports; return once it logs its port."""
    proc = await asyncio.create_subprocess_exec(
        *berrylive_command(), "serve", "--data-dir", data_dir, "--host", "127.0.0.1",
        "--http-port", "0", "--rtmp-port", "0",
        cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while (m := LISTENING.search(log)) is None:
                line = await proc.stderr.readline()
                if not line:
                    await proc.wait()
                    raise AssertionError(f"berrylive exited {proc.returncode}:\n{log.decode()}")
                log += line
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    served = Served(proc, int(m.group(1)), log)
    served.drain = asyncio.ensure_future(_drain(proc, log))  # keeps stderr from filling up
    return served


async def _drain(proc: asyncio.subprocess.Process, log: bytearray) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        log += line


async def healthz(served: Served) -> dict:
    async with aiohttp.ClientSession() as s, s.get(served.url + "/healthz") as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def stop_and_check_no_children(served: Served) -> None:
    """SIGINT (Ctrl-C) the server: it exits 0 and every child it had (valkey-server,
    ffmpeg) is gone."""
    parent = psutil.Process(served.proc.pid)
    children = parent.children(recursive=True)
    served.proc.send_signal(signal.SIGINT)
    try:
        code = await asyncio.wait_for(served.proc.wait(), 30)
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
    if served.drain is not None:
        await served.drain
    assert code == 0, served.log.decode()[-3000:]
    _gone, alive = psutil.wait_procs(children, timeout=5)
    for p in alive:  # do not leak them into the rest of the run
        p.kill()
    assert not alive, [(p.pid, p.name()) for p in alive]


async def test_serve_relative_data_dir_from_a_fresh_working_directory(tmp_path: Path) -> None:
    """The default layout a new user gets: ``--data-dir data`` relative to the cwd,
    the embedded valkey-server (which changes directory itself) under it."""
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    served = await serve(cwd, "data", clean_env())
    try:
        body = await healthz(served)
        assert body["status"] == "ok" and body["redis"] is True
        valkey = [p for p in psutil.Process(served.proc.pid).children() if "valkey" in p.name()]
        assert len(valkey) == 1
        assert (cwd / "data" / "valkey" / "valkey.log").exists()
        assert (cwd / "data" / "berrylive.db").exists() and (cwd / "data" / "secret").exists()
        for arg in valkey[0].cmdline()[1:]:  # no relative path reaches the child
            if "/" in arg:
                assert arg.startswith(("/", "unix")), arg
    finally:
        await stop_and_check_no_children(served)
    # a second start on the same data dir comes up again (AOF, secret, database reused)
    again = await serve(cwd, "data", clean_env())
    try:
        assert (await healthz(again))["status"] == "ok"
    finally:
        await stop_and_check_no_children(again)


@pytest.mark.parametrize(
    "shape", ["absolute with spaces", "long, not yet created", "relative with dot-dot"]
)
async def test_serve_with_any_data_dir(tmp_path: Path, shape: str) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if shape == "absolute with spaces":
        data_dir = str(tmp_path / "my shop data" / "live data")
        where = Path(data_dir)
    elif shape == "long, not yet created":
        where = tmp_path.joinpath(*[f"level-{i:02d}-of-a-long-path" for i in range(8)])
        data_dir = str(where)  # > 100 bytes: the valkey socket goes to a short temp dir
    else:
        data_dir = "../elsewhere/./data"
        where = tmp_path / "elsewhere" / "data"
    assert not where.exists()
    served = await serve(cwd, data_dir, clean_env())
    try:
        assert (await healthz(served))["status"] == "ok"
        assert (where / "berrylive.db").exists() and (where / "valkey" / "valkey.log").exists()
    finally:
        await stop_and_check_no_children(served)


async def test_serve_with_redis_url_and_a_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    """The multi-machine setup: ``REDIS_URL`` (the session's real Redis) and an explicit
    secret, so nothing but the server itself can make the data dir; SQLite lives in it."""
    redis_url = os.environ[REDIS_ENV]
    cwd = tmp_path / "node"
    cwd.mkdir()
    prefix = f"test:{uuid.uuid4().hex[:10]}:"  # this test's keys only, on a shared Redis
    env = clean_env(
        REDIS_URL=redis_url,
        BERRYLIVE_SECRET="serve-test-" + uuid.uuid4().hex,
        BERRYLIVE_RELAY_CLUSTER_PREFIX=prefix + "cluster:",
        BERRYLIVE_DANMAKU_REDIS_PREFIX=prefix + "dm:",
        BERRYLIVE_SHOP_REDIS_PREFIX=prefix + "shop",
    )
    served = await serve(cwd, "new/data dir", env)
    try:
        body = await healthz(served)
        assert body["status"] == "ok" and body["redis"] is True
        assert (cwd / "new" / "data dir" / "berrylive.db").exists()
        assert not (cwd / "new" / "data dir" / "valkey").exists()  # no embedded valkey
        assert not [p for p in psutil.Process(served.proc.pid).children() if "valkey" in p.name()]
    finally:
        await stop_and_check_no_children(served)


def _valkeys_on(data_dir: Path) -> list[psutil.Process]:
    """valkey-server processes working in ``data_dir/valkey`` (valkey rewrites its
    command line, but runs in its --dir)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if "valkey" in (p.info["name"] or "") and Path(p.cwd()) == data_dir / "valkey":
                found.append(p)
        except psutil.Error:
            continue
    return found


async def test_killed_server_leaves_no_valkey_and_restarts_with_one(tmp_path: Path) -> None:
    """SIGKILL gives berrylive no chance to stop its valkey-server: the child ends by itself
    (parent-death signal), and the next start runs exactly one valkey on the dir."""
    cwd = tmp_path / "k"
    cwd.mkdir()
    served = await serve(cwd, "data", clean_env())
    (valkey,) = [p for p in psutil.Process(served.proc.pid).children() if "valkey" in p.name()]
    served.proc.kill()
    await served.proc.wait()
    if served.drain is not None:
        await served.drain
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, [valkey], 15)
    for p in alive:
        p.kill()
    assert not alive, "valkey-server outlived a SIGKILLed berrylive"
    again = await serve(cwd, "data", clean_env())
    try:
        assert (await healthz(again))["status"] == "ok"
        assert len(_valkeys_on(cwd / "data")) == 1
    finally:
        await stop_and_check_no_children(again)


async def test_a_leftover_valkey_on_the_data_dir_is_stopped_first(tmp_path: Path) -> None:
    """A valkey-server still running on the dir (started without the parent-death signal,
    as on a system without setpriv) is stopped before a new one starts on the same files."""
    from core.redis import valkey_server_exe

    data = tmp_path / "data"
    vdir = data / "valkey"
    vdir.mkdir(parents=True)
    leftover = await asyncio.create_subprocess_exec(
        valkey_server_exe(), "--port", "0", "--unixsocket", str(vdir / "old.sock"),
        "--dir", str(vdir), "--appendonly", "yes", "--pidfile", str(vdir / "valkey.pid"),
        "--logfile", str(vdir / "old.log"), "--daemonize", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(15):
            while not (vdir / "valkey.pid").exists():
                await asyncio.sleep(0.05)
        served = await serve(tmp_path, "data", clean_env())
        try:
            assert await asyncio.wait_for(leftover.wait(), 15) is not None
            assert (await healthz(served))["status"] == "ok"
            assert [p.pid for p in _valkeys_on(data)] != [leftover.pid]
            assert len(_valkeys_on(data)) == 1
            assert b"left running" in served.log
        finally:
            await stop_and_check_no_children(served)
    finally:
        if leftover.returncode is None:
            leftover.kill()
            await leftover.wait()
