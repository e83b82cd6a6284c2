"""Helpers for replay tests: a server with a short publisher linger, waiting for replays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from replay import SERVICE, Replay, ReplayService, ReplayState
from tests.mediautil import decode_all, duration, probe, stream_types, wait_for

__all__ = [
    "decode_all",
    "duration",
    "probe",
    "stream_types",
]

LINGER = 2.0


def service_of(server: Any) -> ReplayService:
    return server.app[SERVICE]


async def wait_replay(server: Any, app: str, stream: str, timeout: float = 15) -> Replay:
    svc = service_of(server)

    def find() -> bool:
        return any(r.app == app and r.stream == stream for r in svc.replays.values())

    await wait_for(find, timeout)
    return next(r for r in svc.replays.values() if r.app == app and r.stream == stream)


async def wait_done(replay: Replay, timeout: float = 60) -> Replay:
    await wait_for(
        lambda: replay.state in (ReplayState.READY, ReplayState.FAILED), timeout, step=0.1
    )
    return replay


async def get_json(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        body = await r.text()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


def replay_dir(server: Any, replay: Replay) -> Path:
    return Path(server.runtime.data_dir) / "replay" / replay.id


async def run_publisher(url: str, clip: Path, **kw: Any) -> None:
    from tests.mediautil import start_publisher

    proc = await start_publisher(url, clip, **kw)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
