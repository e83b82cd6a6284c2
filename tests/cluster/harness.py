"""Real ``berrylive serve`` processes on 127.0.0.1 sharing one Redis, and raw FLV viewers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from core.redis import EmbeddedValkey, connect
from ingest import auth
from media import flv
from relay.cluster import ClusterDirectory, NodeInfo
from tests.conftest import TEST_SECRET
from tests.mediautil import wait_for

BERRYLIVE = str(Path(sys.executable).parent / "berrylive")
LISTEN_RE = re.compile(r"(http|rtmp) listening on [^\s:]+:(\d+)")

TTL = 2.0
HEARTBEAT = 0.4


@dataclass
class Node:
    name: str
    role: str
    proc: asyncio.subprocess.Process
    log: Path
    http_port: int = 0
    rtmp_port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtmp(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    def push_url(self, stream: str, app: str = "live") -> str:
        return auth.push_url(self.rtmp, TEST_SECRET, app, stream, int(time.time()) + 3600)

    def flv_url(self, stream: str, app: str = "live") -> str:
        return f"{self.http}/{app}/{stream}.flv"

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Cluster:
    root: Path
    redis_url: str
    prefix: str
    redis: Any
    nodes: list[Node] = field(default_factory=list)

    @property
    def directory(self) -> ClusterDirectory:
        return ClusterDirectory(self.redis, self.prefix, TTL)

    async def start(
        self,
        name: str,
        role: str = "origin",
        origins: list[Node] | None = None,
        rtmp_port: int = 0,
        **env: str,
    ) -> Node:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        args = [BERRYLIVE, "serve", "--host", "127.0.0.1", "--http-port", "0"]
        args += ["--rtmp-port", str(rtmp_port)]
        args += ["--data-dir", str(data), "--role", role]
        if origins:
            args += ["--origin", ",".join(o.http for o in origins)]
        penv = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
        penv.update(
            REDIS_URL=self.redis_url,
            BERRYLIVE_SECRET=TEST_SECRET,
            BERRYLIVE_SERVER_NODE_ID=name,
            BERRYLIVE_RELAY_CLUSTER_PREFIX=self.prefix,
            BERRYLIVE_RELAY_CLUSTER_TTL=str(TTL),
            BERRYLIVE_RELAY_CLUSTER_HEARTBEAT=str(HEARTBEAT),
            BERRYLIVE_RELAY_EDGE_IDLE_LINGER="1",
            BERRYLIVE_REPLAY_ENABLED="0",
            BERRYLIVE_DANMAKU_ENABLED="0",
            BERRYLIVE_SHOP_ENABLED="0",
            BERRYLIVE_WEBRTC_UDP_PORT="0",  # a free one: nodes and parallel tests never collide
        )
        penv.pop("DATABASE_URL", None)
        penv.update(env)
        with open(log, "wb") as fh:
            proc = await asyncio.create_subprocess_exec(
                *args, env=penv, stdout=asyncio.subprocess.DEVNULL, stderr=fh
            )
        node = Node(name, role, proc, log)
        self.nodes.append(node)

        def listening() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{node.logs()[-3000:]}")
            ports = {m.group(1): int(m.group(2)) for m in LISTEN_RE.finditer(node.logs())}
            node.http_port = ports.get("http", 0)
            node.rtmp_port = ports.get("rtmp", 0)
            return bool(node.http_port and node.rtmp_port)

        await wait_for(listening, 30, 0.05)
        if penv["BERRYLIVE_RELAY_CLUSTER_PREFIX"] == self.prefix:
            await self.wait_registered(node)
        return node

    async def wait_registered(self, node: Node) -> None:
        async def registered() -> bool:
            return await self.directory.node(node.name) is not None

        await wait_for(registered, 15, 0.05)

    async def info(self, node: Node) -> NodeInfo | None:
        return await self.directory.node(node.name)

    async def stream_viewers(self, node: Node, key: str = "live/s") -> int | None:
        """Viewers of ``key`` on ``node`` as the node registered them (None: no such stream)."""
        info = await self.info(node)
        if info is None or key not in info.streams:
            return None
        return int(info.streams[key]["viewers"])


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    external = os.environ.get("BERRYLIVE_TEST_REDIS_URL")
    embedded: EmbeddedValkey | None = None
    if external:
        url = external
    else:
        embedded = EmbeddedValkey(tmp_path / "redis", persist=False)
        await embedded.start()
        url = embedded.url
    client = connect(url)
    c = Cluster(tmp_path, url, f"test:{uuid.uuid4().hex[:10]}:cluster:", client)
    try:
        yield c
    finally:
        await asyncio.gather(*(n.kill(signal.SIGTERM) for n in c.nodes), return_exceptions=True)
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=c.prefix + "*", count=500)]
            if keys:
                await client.delete(*keys)
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


@dataclass
class Tag:
    at: float
    """perf_counter() when the tag was complete."""
    kind: int
    ts: int
    keyframe: bool
    digest: bytes


class FlvViewer:
    """A raw HTTP-FLV viewer: one connection, every tag with its arrival time."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.tags: list[Tag] = []
        self.status = 0
        self.ended: str | None = None
        self.connected = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        demux = flv.FlvDemuxer()
        try:
            async with self.session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=None, sock_read=30)
            ) as resp:
                self.status = resp.status
                self.connected.set()
                if resp.status != 200:
                    self.ended = f"status {resp.status}"
                    return
                async for data in resp.content.iter_any():
                    now = time.perf_counter()
                    for item in demux.feed(data):
                        if isinstance(item, flv.FlvTag) and item.tag_type in (8, 9):
                            key = item.tag_type == 9 and (item.body[0] >> 4) == 1
                            key = key and len(item.body) > 1 and item.body[1] == 1
                            digest = hashlib.blake2b(item.body, digest_size=12).digest()
                            self.tags.append(Tag(now, item.tag_type, item.timestamp, key, digest))
                self.ended = "eof"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.ended = f"error {exc!r}"
        finally:
            self.connected.set()

    def video(self) -> list[Tag]:
        return [t for t in self.tags if t.kind == 9]

    def video_after(self, t0: float) -> list[Tag]:
        return [t for t in self.tags if t.kind == 9 and t.at >= t0]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class RtmpPublisher:
    """Publishes an FLV file over RTMP in real time with the sans-I/O client core and
    records when each tag was written (for per-hop latency)."""

    def __init__(self, url: str, clip: Path) -> None:
        self.url = url
        self.clip = clip
        self.sent: dict[bytes, float] = {}
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        from urllib.parse import urlsplit

        from media.rtmp.client import ClientConnection, CommandReply

        parts = urlsplit(self.url)
        app, _, name = parts.path.lstrip("/").partition("/")
        name += f"?{parts.query}" if parts.query else ""
        tags = [
            t
            for t in flv.FlvDemuxer().feed(self.clip.read_bytes())
            if isinstance(t, flv.FlvTag) and t.tag_type in (8, 9)
        ]
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        client = ClientConnection(chunk_size=60000)
        client.connect(app, f"rtmp://{parts.hostname}:{parts.port}/{app}")
        tx = client.create_stream()
        writer.write(client.data_to_send())
        sid = 0
        while True:
            data = await reader.read(65536)
            assert data, "server closed during publish"
            for ev in client.receive_data(data):
                if (
                    isinstance(ev, CommandReply)
                    and ev.name == "_result"
                    and ev.transaction_id == tx
                ):
                    sid = int(next(a for a in ev.args if isinstance(a, int | float)))
                    client.publish(sid, name)
                elif isinstance(ev, CommandReply) and ev.name == "onStatus":
                    assert ev.info.get("code") == "NetStream.Publish.Start", ev.info
                    break
            else:
                writer.write(client.data_to_send())
                continue
            break

        async def drain_acks() -> None:
            while data := await reader.read(65536):
                client.receive_data(data)
                writer.write(client.data_to_send())

        acks = asyncio.ensure_future(drain_acks())
        try:
            loop = asyncio.get_running_loop()
            offset = 0
            span = tags[-1].timestamp + 33
            start = loop.time()
            while True:
                for t in tags:
                    ts = t.timestamp + offset
                    delay = start + ts / 1000 - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    client.send_media(t.tag_type, sid, ts, t.body)
                    writer.write(client.data_to_send())
                    self.sent.setdefault(hashlib.blake2b(t.body, digest_size=12).digest(),
                                         time.perf_counter())  # fmt: skip
                offset += span
        finally:
            acks.cancel()
            writer.close()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
