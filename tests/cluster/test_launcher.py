"""``berrylive cluster --edges 2``: one origin + 2 edges on this machine, one embedded valkey."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.mediautil import wait_for

pytestmark = pytest.mark.slow

BERRYLIVE = str(Path(sys.executable).parent / "berrylive")
LISTEN = re.compile(r"\[(\S+)\] .*http listening on [^\s:]+:(\d+)")


async def test_cluster_command_runs_origin_and_edges_restarts_and_stops_them(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    for k in ("REDIS_URL", "DATABASE_URL"):
        env.pop(k, None)
    env.update(BERRYLIVE_SECRET="launcher-test", BERRYLIVE_REPLAY_ENABLED="0",
               BERRYLIVE_DANMAKU_ENABLED="0", BERRYLIVE_SHOP_ENABLED="0")  # fmt: skip
    log = tmp_path / "cluster.log"
    with log.open("wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            BERRYLIVE, "cluster", "--edges", "2", "--host", "127.0.0.1", "--http-port", "0",
            "--rtmp-port", "0", "--data-dir", str(tmp_path / "data"),
            env=env, stdout=fh, stderr=fh,
        )  # fmt: skip
    ports: dict[str, int] = {}

    def listening(n: int) -> bool:
        assert proc.returncode is None, log.read_text()[-3000:]
        ports.clear()
        for m in LISTEN.finditer(log.read_text(errors="replace")):
            ports[m.group(1)] = int(m.group(2))
        return len(ports) == n and "cluster: origin" in log.read_text()

    try:
        await wait_for(lambda: listening(3), 60, 0.1)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len([c for c in children if "serve" in c.cmdline()]) == 3
        async with aiohttp.ClientSession() as session:

            async def edges_registered() -> bool:
                async with session.get(f"http://127.0.0.1:{ports['origin']}/healthz") as r:
                    assert r.status == 200
                return True

            await wait_for(edges_registered, 10)
        # An edge that dies is restarted by the launcher.
        edge = next(c for c in children if "edge-1" in " ".join(c.cmdline()))
        edge.send_signal(signal.SIGKILL)
        await wait_for(lambda: "edge-1 exited" in log.read_text(), 10)
        await wait_for(
            lambda: any(
                "edge-1" in " ".join(c.cmdline()) and c.pid != edge.pid
                for c in psutil.Process(proc.pid).children(recursive=True)
            ),
            30,
            0.2,
        )
        children = psutil.Process(proc.pid).children(recursive=True)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 40)
    assert code == 0, log.read_text()[-2000:]
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive  # every child (nodes and valkey) stopped with the launcher
