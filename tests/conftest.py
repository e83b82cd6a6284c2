"""Shared fixtures: a real berrylive server on 127.0.0.1 with port 0, real clients."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from control.app import create_app
from control.config import Config, load_config
from core.runtime import RUNTIME, Runtime
from relay.fastplay import PlaySite

TEST_SECRET = "test-secret-please-change"


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A config for tests: loopback, port 0 everywhere, embedded valkey under ``data_dir``.

    ``sections`` maps a section name to field overrides, e.g. ``relay={"gop_max_frames": 10}``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    cfg = load_config(
        None, env=env, host="127.0.0.1", rtmp_port=0, http_port=0, data_dir=str(data_dir)
    )
    cfg = replace(cfg, server=replace(cfg.server, secret=TEST_SECRET))
    for name, fields in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **fields)})
    return cfg


@dataclass
class RunningServer:
    app: web.Application
    runner: web.AppRunner
    config: Config

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.http_port}"

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.runtime.rtmp_port}"

    def push_url(self, stream: str, app: str = "live", ttl: int = 3600) -> str:
        import time

        from ingest import auth

        return auth.push_url(
            self.rtmp_url, self.config.server.secret, app, stream, int(time.time()) + ttl
        )


async def start_server(config: Config) -> RunningServer:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = PlaySite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    app[RUNTIME].http_port = port
    return RunningServer(app, runner, config)


@pytest.fixture
async def server_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """``await server_factory(relay={...})`` starts a full server; stopped after the test."""
    started: list[RunningServer] = []

    async def factory(name: str = "node", **sections: dict[str, Any]) -> RunningServer:
        cfg = make_config(tmp_path / name, **sections)
        srv = await start_server(cfg)
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        await asyncio.wait_for(srv.runner.cleanup(), 30)


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RunningServer:
    srv: RunningServer = await server_factory()
    return srv
