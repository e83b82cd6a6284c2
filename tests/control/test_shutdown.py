"""No broadcast stuck ``live`` after a shutdown or a crash (issue 17 item 7).

A graceful stop ends ingest's RTMP sessions while control still listens (the broadcast
becomes ``interrupted``); a start finds ``live`` broadcasts whose stream is live nowhere
and interrupts them (the sweeper then ends them). Real servers, real ffmpeg, real
``berrylive serve`` processes."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from control.accounts import Role
from control.api import CONTROL
from control.models import broadcasts, deliveries
from core.db import create_engine
from tests.conftest import RunningServer, make_config, start_server
from tests.control.conftest import CONTROL_TEST_SETTINGS
from tests.control.publisher import start_ffmpeg, stop
from tests.integration.test_serve import berrylive_command, clean_env, serve


async def _state(srv: RunningServer, bid: int) -> str:
    bs = srv.app[CONTROL].broadcasts
    assert bs is not None
    return (await bs.get(bid)).state.value


async def _wait_state(srv: RunningServer, bid: int, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (state := await _state(srv, bid)) not in states:
        assert time.monotonic() < deadline, f"broadcast {bid} is {state}, not {states}"
        await asyncio.sleep(0.05)
    return state


async def _operator(srv: RunningServer) -> str:
    accounts = srv.app[CONTROL].accounts
    assert accounts is not None
    user = await accounts.create_user("boss", "correct-horse-battery-9", Role.OPERATOR)
    token, _ = await accounts.issue_token(user.id, "api", "test")
    return token


async def _new_broadcast(base: str, token: str) -> tuple[int, str]:
    """A broadcast starting now and its push URL (through the API)."""
    headers = {"Authorization": f"Bearer {token}"}
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(
            base + "/api/broadcasts", json={"title": "tea", "scheduled_start": start}
        ) as r:
            assert r.status == 201, await r.text()
            bid = (await r.json())["id"]
        async with s.get(f"{base}/api/broadcasts/{bid}/push") as r:
            assert r.status == 200, await r.text()
            return bid, (await r.json())["url"]


def _config(tmp_path: Path) -> Any:
    return make_config(tmp_path / "node", control=dict(CONTROL_TEST_SETTINGS))


async def test_graceful_stop_with_a_live_publisher_leaves_no_live_broadcast(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path)
    srv = await start_server(cfg)
    stopped = False
    try:
        token = await _operator(srv)
        bid, url = await _new_broadcast(srv.http_url, token)
        # a webhook for broadcast events (its receiver is never reached: what matters is
        # that the shutdown's broadcast.interrupted is recorded for delivery)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
            async with s.post(
                srv.http_url + "/api/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["broadcast.*"]},
            ) as r:
                assert r.status == 201, await r.text()
        proc = await start_ffmpeg(url)
        try:
            await _wait_state(srv, bid, {"live"}, 20)
            await asyncio.wait_for(srv.runner.cleanup(), 30)  # as on SIGTERM
            stopped = True
        finally:
            await stop(proc)
    finally:
        if not stopped:
            await srv.runner.cleanup()
    engine = create_engine(cfg.database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(broadcasts.c.state, broadcasts.c.state_changed_at).where(
                        broadcasts.c.id == bid
                    )
                )
            ).one()
            topics = set((await conn.execute(sa.select(deliveries.c.topic))).scalars().all())
    finally:
        await engine.dispose()
    # decided during the shutdown itself, not by the next start
    assert row.state == "interrupted", row
    # and the webhook has it to deliver (its worker stopped before ingest; the record did not)
    assert {"broadcast.live", "broadcast.interrupted"} <= topics, topics


async def test_a_start_interrupts_live_broadcasts_with_no_stream(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    srv = await start_server(cfg)
    try:
        bid, _url = await _new_broadcast(srv.http_url, await _operator(srv))
    finally:
        await srv.runner.cleanup()
    # as a crash leaves it: live, since an hour, with no stream anywhere
    engine = create_engine(cfg.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                broadcasts.update()
                .where(broadcasts.c.id == bid)
                .values(state="live", state_changed_at=time.time() - 3600)
            )
    finally:
        await engine.dispose()
    srv = await start_server(cfg)
    try:
        await _wait_state(srv, bid, {"interrupted", "ended"}, 10)
        await _wait_state(srv, bid, {"ended"}, 10)  # the sweeper, after the grace (1.5 s)
    finally:
        await srv.runner.cleanup()


async def test_sigterm_of_berrylive_serve_with_a_live_publisher(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    env = clean_env()
    add = await asyncio.create_subprocess_exec(
        *berrylive_command(), "user", "add", "boss", "--role", "operator",
        "--password-stdin", "--data-dir", data,
        stdin=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    await add.communicate(b"correct-horse-battery-9\n")
    assert add.returncode == 0
    served = await serve(tmp_path, data, env)
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                served.url + "/api/auth/login",
                json={"username": "boss", "password": "correct-horse-battery-9"},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            token = (await r.json())["token"]
        bid, url = await _new_broadcast(served.url, token)
        rtmp = served.log  # the RTMP port is in the log
        port = re.search(rb"rtmp listening on [^:]+:(\d+)", rtmp)
        assert port is not None, rtmp.decode()[-2000:]
        url = re.sub(r"rtmp://[^/]+/", f"rtmp://127.0.0.1:{int(port.group(1))}/", url)
        proc = await start_ffmpeg(url)
        try:
            deadline = time.monotonic() + 20
            while await _api_state(served.url, token, bid) != "live":
                assert time.monotonic() < deadline, "never went live"
                await asyncio.sleep(0.1)
            served.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(served.proc.wait(), 30) == 0, served.log.decode()[-3000:]
        finally:
            await stop(proc)
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
        if served.drain is not None:
            await served.drain
    again = await serve(tmp_path, data, env)
    try:
        state = await _api_state(again.url, token, bid)
        assert state in ("interrupted", "ended"), state
    finally:
        again.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.proc.wait(), 30)
        if again.drain is not None:
            await again.drain


async def _api_state(base: str, token: str, bid: int) -> str:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s,
        s.get(f"{base}/api/broadcasts/{bid}") as r,
    ):
        assert r.status == 200, await r.text()
        return str((await r.json())["state"])


async def test_sigusr1_logs_where_the_server_is_waiting_and_it_goes_on(tmp_path: Path) -> None:
    """``kill -USR1``: every asyncio task's stack in the log (to find what a server that
    does not stop waits for); the server serves on and still stops cleanly."""
    served = await serve(tmp_path, str(tmp_path / "data"), clean_env())
    try:
        served.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while b"SIGUSR1:" not in served.log or b"task " not in served.log.split(b"SIGUSR1:")[1]:
            assert time.monotonic() < deadline, served.log.decode()[-3000:]
            await asyncio.sleep(0.05)
        dump = served.log.split(b"SIGUSR1:")[1].decode()
        assert re.search(r"\d+ asyncio tasks", dump), dump[:2000]
        assert "Stack for <Task" in dump, dump[:2000]
        async with aiohttp.ClientSession() as s, s.get(served.url + "/healthz") as r:
            assert r.status == 200
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 30) == 0, served.log.decode()[-3000:]
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
        if served.drain is not None:
            await served.drain
