"""``berrylive cluster --edges 2``: one origin + 2 edges on this machine, one embedded valkey."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from relay.launcher import node_port
from tests.mediautil import wait_for

pytestmark = pytest.mark.slow

BERRYLIVE = str(Path(sys.executable).parent / "berrylive")
LISTEN = re.compile(r"\[(\S+)\] .*http listening on [^\s:]+:(\d+)")
UDP = re.compile(r"\[(\S+)\] .*webrtc: UDP [^\s:]+:(\d+)")


def free_udp_run(n: int) -> int:
    """A UDP port ``p`` on 127.0.0.1 with ``p .. p+n-1`` all free just now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind(("127.0.0.1", 0))
            base = int(first.getsockname()[1])
            if base + n > 65535:
                continue
            held: list[socket.socket] = []
            try:
                for i in range(1, n):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    held.append(s)
                    s.bind(("127.0.0.1", base + i))
                return base
            except OSError:
                continue
            finally:
                for s in held:
                    s.close()
    raise AssertionError(f"no {n} consecutive free UDP ports")


def test_node_port_is_base_plus_offset_and_zero_stays_zero() -> None:
    assert [node_port(8189, i) for i in range(3)] == [8189, 8190, 8191]
    assert [node_port(0, i) for i in range(3)] == [0, 0, 0]
    assert node_port(65535, 0) == 65535
    with pytest.raises(ValueError, match="beyond 65535"):
        node_port(65535, 1)


async def test_cluster_command_runs_origin_and_edges_restarts_and_stops_them(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    for k in ("REDIS_URL", "DATABASE_URL"):
        env.pop(k, None)
    env.update(BERRYLIVE_SECRET="launcher-test", BERRYLIVE_REPLAY_ENABLED="0",
               BERRYLIVE_DANMAKU_ENABLED="0", BERRYLIVE_SHOP_ENABLED="0")  # fmt: skip
    # A fixed WebRTC port as in production (8189 by default): each node must get its own.
    udp_base = free_udp_run(3)
    env["BERRYLIVE_WEBRTC_UDP_PORT"] = str(udp_base)
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
        text = log.read_text(errors="replace")
        udp = {m.group(1): int(m.group(2)) for m in UDP.finditer(text)}
        assert udp == {"origin": udp_base, "edge-1": udp_base + 1, "edge-2": udp_base + 2}, text
        assert f"WebRTC UDP origin {udp_base}, edge-1 {udp_base + 1}" in text, text
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
