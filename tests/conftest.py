"""Shared fixtures: a real berrylive server on 127.0.0.1 with port 0, real clients.

Session hooks: the real PostgreSQL and Redis are resolved once before collection
(``tests/services.py``), and a run in which any test was skipped fails
(``BERRYLIVE_TEST_ALLOW_SKIPS=1`` turns that off for a partial local run).
"""

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
ALLOW_SKIPS_ENV = "BERRYLIVE_TEST_ALLOW_SKIPS"

_services: Any = None
_skipped: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    global _services
    if hasattr(config, "workerinput"):  # an xdist worker: the controller exported the URLs
        return
    from tests import services

    _services = services.resolve()
    config.stash[_SERVICES_KEY] = (
        f"postgresql: {_services.origin['postgresql']} {_services.database_url} | "
        f"redis: {_services.origin['redis']} {_services.redis_url}"
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    return config.stash.get(_SERVICES_KEY, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _services
    if _services is not None:
        _services.close()
        _services = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _skipped or os.environ.get(ALLOW_SKIPS_ENV, "") not in ("", "0"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", f"{len(_skipped)} test(s) skipped: a skip fails this run", red=True)
        for nodeid in _skipped[:50]:
            reporter.write_line(f"SKIPPED {nodeid}")
        reporter.write_line(
            "Every test must run (see the skip reasons above; "
            f"{ALLOW_SKIPS_ENV}=1 allows skips for a partial local run)."
        )
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SERVICES_KEY = pytest.StashKey[str]()


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
    cfg = replace(cfg, shop=replace(cfg.shop, pay_simulator=True))
    cfg = replace(cfg, webrtc=replace(cfg.webrtc, udp_port=0))  # no fixed UDP port in tests
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
    app[RUNTIME].http_port = site.port
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
