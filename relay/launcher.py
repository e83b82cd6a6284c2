"""``berrylive cluster --edges N``: one origin and N edge processes on this machine.

One Python process uses one core; this command runs ``berrylive serve`` once as the
origin and N times as edges, sharing one Redis (``REDIS_URL``, or the embedded
valkey-server started here on a unix socket), one secret and one database, so the
machine's cores are all used. Run the same processes on several machines (with a shared
``REDIS_URL``) and they form one cluster.

Ports: the origin takes ``--http-port``/``--rtmp-port`` and the configured
``webrtc.udp_port``; edge *i* takes ``port + i`` of each (0 stays 0: every process picks a
free port and logs it), so no two nodes bind the same port and each node's WHIP/WHEP
answers advertise its own UDP port. Children's logs are prefixed
with their name. A child that exits is restarted with backoff; Ctrl-C stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.proc import stop_process
from core.redis import EmbeddedValkey

logger = logging.getLogger(__name__)

LISTEN_RE = re.compile(r"(http|rtmp) listening on ([^\s:]+):(\d+)")
UDP_RE = re.compile(r"webrtc: UDP \S+:(\d+)")
PER_NODE_ENV = frozenset(
    {f"BERRYLIVE_SERVER_{f}" for f in ("NODE_ID", "ROLE", "HTTP_PORT", "RTMP_PORT")}
    | {"BERRYLIVE_WEBRTC_UDP_PORT"}
)
"""Settings the launcher gives each node itself (never inherited from its environment)."""


def node_port(base: int, offset: int) -> int:
    """The port of node ``offset`` (0: the origin, i: edge i) for a configured ``base``:
    ``base + offset``, or 0 (a free one) when ``base`` is 0."""
    if base == 0:
        return 0
    port = base + offset
    if port > 65535:
        raise ValueError(f"port {base} + {offset} is beyond 65535")
    return port


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    ports: dict[str, int] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0


def _exe() -> list[str]:
    return [sys.executable, "-m", "control.cli"]


async def _pump(child: Child, stream: asyncio.StreamReader) -> None:
    out = sys.stderr
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if (u := UDP_RE.search(text)) is not None:
            child.ports["udp"] = int(u.group(1))
        m = LISTEN_RE.search(text)
        if m:
            child.ports[m.group(1)] = int(m.group(3))
            if "http" in child.ports and "rtmp" in child.ports:
                child.ready.set()
        out.write(f"[{child.name}] {text}\n")
        out.flush()


async def _supervise(child: Child, stopping: asyncio.Event) -> None:
    attempt = 0
    while not stopping.is_set():
        child.proc = await asyncio.create_subprocess_exec(
            *child.args,
            env=child.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children
        )
        assert child.proc.stderr is not None
        pump = asyncio.create_task(_pump(child, child.proc.stderr))
        code = await child.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pump, 2)
        if stopping.is_set():
            return
        child.restarts += 1
        attempt += 1
        delay = random.uniform(0.5, min(30.0, 0.5 * 2**attempt))
        logger.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)


async def _stop(child: Child) -> None:
    if child.proc is not None:
        await stop_process(child.proc)


async def run_cluster(
    *,
    edges: int,
    data_dir: Path,
    host: str,
    http_port: int,
    rtmp_port: int,
    redis_url: str,
    secret: str,
    database_url: str,
    config_file: str | None = None,
    webrtc_udp_port: int = 0,
) -> int:
    if edges < 0 or edges > 64:
        raise ValueError("--edges must be between 0 and 64")
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    embedded: EmbeddedValkey | None = None
    if not redis_url:
        embedded = EmbeddedValkey(data_dir)
        await embedded.start()
        redis_url = embedded.url
    for base in (http_port, rtmp_port, webrtc_udp_port):
        node_port(base, edges)  # every node's port exists, or refuse before starting any
    base_env = {k: v for k, v in os.environ.items() if k not in PER_NODE_ENV}
    base_env.update(REDIS_URL=redis_url, BERRYLIVE_SECRET=secret, DATABASE_URL=database_url)
    host_tag = socket.gethostname().split(".")[0] or "node"

    def child(name: str, role: str, port_offset: int, origin: str | None) -> Child:
        args = [*_exe(), "serve", "--role", role, "--host", host]
        args += ["--data-dir", str(data_dir / "nodes" / name)]
        args += ["--http-port", str(node_port(http_port, port_offset))]
        args += ["--rtmp-port", str(node_port(rtmp_port, port_offset))]
        if config_file:
            args += ["--config", config_file]
        if origin:
            args += ["--origin", origin]
        env = dict(base_env, BERRYLIVE_SERVER_NODE_ID=f"{host_tag}-{name}")
        # The environment wins over a --config file, so this reaches the node whatever sets it.
        env["BERRYLIVE_WEBRTC_UDP_PORT"] = str(node_port(webrtc_udp_port, port_offset))
        return Child(name, args, env)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    origin = child("origin", "origin", 0, None)
    children = [origin]
    tasks = [asyncio.create_task(_supervise(origin, stopping))]
    try:
        ready = asyncio.create_task(origin.ready.wait())
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({ready, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stop_wait.cancel()
        if not stopping.is_set():
            public = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            origin_url = f"http://{public}:{origin.ports['http']}"
            for i in range(1, edges + 1):
                c = child(f"edge-{i}", "edge", i, origin_url)
                children.append(c)
                tasks.append(asyncio.create_task(_supervise(c, stopping)))
            all_ready: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*(c.ready.wait() for c in children[1:]))
            )
            stop_wait2: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
            await asyncio.wait(
                {all_ready, stop_wait2}, timeout=60, return_when=asyncio.FIRST_COMPLETED
            )
            all_ready.cancel()
            stop_wait2.cancel()
            if not stopping.is_set():
                print(
                    f"cluster: origin {origin_url} (push RTMP to rtmp://{public}:"
                    f"{origin.ports.get('rtmp')}), edges: "
                    + ", ".join(f"http://{public}:{c.ports.get('http')}" for c in children[1:])
                    + f"; players ask http://{public}:{origin.ports['http']}/api/play/APP/STREAM"
                    + (
                        "; WebRTC UDP " + ", ".join(f"{c.name} {c.ports['udp']}" for c in children)
                        if all("udp" in c.ports for c in children)
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
        await stopping.wait()
    finally:
        stopping.set()
        await asyncio.gather(*(_stop(c) for c in reversed(children)), return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if embedded is not None:
            await embedded.stop()
    return 0
