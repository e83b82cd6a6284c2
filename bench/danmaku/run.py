"""Side-by-side danmaku benchmark: berrylive's hub vs the npm ``socket.io`` server.

Servers (``--servers``):

- ``berrylive``: ``berrylive serve`` (150 ms per-room merge, ``danmaku.tick_ms``);
- ``node-merged``: the honest peer, ``node_server_merged.js``: socket.io with the same
  150 ms per-room merge (one ``comments`` event per room per tick, socket.io's broadcast);
- ``node``: the naive peer, ``node_server.js``: one ``comments`` event per comment.

For each server, N viewers (protocol-level clients, :mod:`bench.danmaku.eio`, all in this
process) sit in one room while a separate sender process posts M comments/s. Measured over
a fixed window after a warm-up: deliveries/s (comments received, summed over viewers),
websocket frames/s, send-to-receive latency p50/p99 (from probe viewers that parse every
frame), server CPU and RSS, and the load generator's own CPU. Everything on 127.0.0.1.

    .venv/bin/python -m bench.danmaku.run --clients 1000,2000 --rates 100,500,1000

Node's server needs ``cd bench/danmaku && npm install`` (node_modules is git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench.danmaku.eio import EioClient, connect
from core.tokens import issue_token

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECRET = "bench-secret"
ROOM = "live/bench"
MAX_SAMPLES = 500_000


@dataclass
class Result:
    server: str
    clients: int
    rate: int
    sent: int
    window_s: float
    deliveries_per_s: float
    frames_per_s: float
    completeness: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_pct: float
    deliveries_per_cpu_s: float
    server_rss_mb: float
    redis_cpu_pct: float
    loadgen_cpu_pct: float
    latency_samples: int
    load_avg_1m: float


class Receivers:
    def __init__(self, probes: int) -> None:
        self.probes = probes
        self.deliveries = 0
        self.frames = 0
        self.latencies: list[float] = []
        self.measuring = False
        self.clients: list[EioClient] = []
        self.probe_ids: set[int] = set()

    def on_event(self, client: EioClient, body: bytes) -> None:
        if not body.startswith(b'["comments"'):
            return
        self.frames += 1
        self.deliveries += body.count(b'"id":')
        if id(client) in self.probe_ids and self.measuring:
            now = time.time()
            batch = json.loads(body)[1]
            for c in batch["comments"]:
                text = c.get("text", "")
                if text.startswith("b:") and len(self.latencies) < MAX_SAMPLES:
                    self.latencies.append(now - float(text.split(":")[1]))

    async def connect_all(self, port: int, n: int) -> None:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            tok = issue_token(SECRET, f"viewer{i}", f"v{i}", "viewer", ttl=3600)
            async with sem:
                c = await connect(
                    "127.0.0.1", port, {"room": ROOM, "token": tok}, self.on_event, timeout=60
                )
            self.clients.append(c)
            if i < self.probes:
                self.probe_ids.add(id(c))

        await asyncio.gather(*(one(i) for i in range(n)))

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            line = await r.readline()
            w.close()
            if b" 200 " in line or b" 400 " in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"server on {port} did not come up")


NODE_SERVERS = {"node": "node_server.js", "node-merged": "node_server_merged.js"}


async def start_server(kind: str, port: int, data_dir: str) -> asyncio.subprocess.Process:
    if kind in NODE_SERVERS:
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "socket.io").exists():
            raise RuntimeError("node or bench/danmaku/node_modules/socket.io missing")
        proc = await asyncio.create_subprocess_exec(
            node, str(HERE / NODE_SERVERS[kind]), str(port), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"node server: {line!r}")
        return proc
    env = dict(os.environ)
    env.update(
        BERRYLIVE_SECRET=SECRET,
        BERRYLIVE_SERVER_LOG_LEVEL="WARNING",
        BERRYLIVE_DANMAKU_RATE_CAPACITY="1000",
        BERRYLIVE_DANMAKU_RATE_PER_S="1000",
        BERRYLIVE_DANMAKU_BATCH_MAX_COMMENTS=os.environ.get("BENCH_BATCH_MAX", "1000"),
        BERRYLIVE_DANMAKU_HISTORY_ON_JOIN="0",
        BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS_PER_IP="0",  # every client is on 127.0.0.1
        BERRYLIVE_WEBRTC_UDP_PORT="0",  # not 8189: tests or a demo may hold it
    )
    for k in ("REDIS_URL", "DATABASE_URL"):
        env.pop(k, None)
    exe = str(Path(sys.executable).parent / "berrylive")
    proc = await asyncio.create_subprocess_exec(
        exe, "serve", "--data-dir", data_dir, "--host", "127.0.0.1",
        "--http-port", str(port), "--rtmp-port", "0", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_http(port, "/healthz")
    return proc


def cpu_of(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def children_cpu(p: psutil.Process) -> float:
    total = 0.0
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += cpu_of(c)
    return total


async def run_one(kind: str, n: int, rate: int, warmup: float, window: float) -> Result:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="bl-bench-")
    proc = await start_server(kind, port, data_dir)
    ps = psutil.Process(proc.pid)
    me = psutil.Process()
    recv = Receivers(probes=min(20, n))
    try:
        t = time.monotonic()
        await recv.connect_all(port, n)
        print(f"# {kind}: {n} viewers connected in {time.monotonic() - t:.1f}s", flush=True)
        await asyncio.sleep(1.0)
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.danmaku.sender", "--port", str(port), "--room", ROOM,
            "--rate", str(rate), "--duration", str(warmup + window), "--secret", SECRET,
            cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(warmup + 0.5)  # sender connects in ~0.5 s
        d0, f0 = recv.deliveries, recv.frames
        c0, r0, m0 = cpu_of(ps), children_cpu(ps), cpu_of(me)
        t0 = time.monotonic()
        recv.measuring = True
        await asyncio.sleep(window)
        recv.measuring = False
        dt = time.monotonic() - t0
        d1, f1 = recv.deliveries, recv.frames
        c1, r1, m1 = cpu_of(ps), children_cpu(ps), cpu_of(me)
        rss = ps.memory_info().rss / 2**20
        load1 = os.getloadavg()[0]  # of the whole machine (shared), at the end of the window
        out, _ = await asyncio.wait_for(sender.communicate(), warmup + window + 30)
        sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
        # let in-flight frames arrive, then check completeness
        last = -1
        for _ in range(40):
            await asyncio.sleep(0.25)
            if recv.deliveries == last:
                break
            last = recv.deliveries
        lat = sorted(recv.latencies)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
        cpu = c1 - c0
        return Result(
            server=kind,
            clients=n,
            rate=rate,
            sent=sent,
            window_s=round(dt, 2),
            deliveries_per_s=round((d1 - d0) / dt),
            frames_per_s=round((f1 - f0) / dt),
            completeness=round(recv.deliveries / max(1, sent * n), 4),
            p50_ms=round(q[49] * 1000, 1),
            p99_ms=round(q[98] * 1000, 1),
            max_ms=round((lat[-1] if lat else float("nan")) * 1000, 1),
            server_cpu_pct=round(cpu / dt * 100, 1),
            deliveries_per_cpu_s=round((d1 - d0) / cpu) if cpu > 0 else 0,
            server_rss_mb=round(rss, 1),
            redis_cpu_pct=round((r1 - r0) / dt * 100, 1),
            loadgen_cpu_pct=round((m1 - m0) / dt * 100, 1),
            latency_samples=len(lat),
            load_avg_1m=round(load1, 2),
        )
    finally:
        recv.close()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def table(results: list[Result]) -> str:
    head = (
        "| server | N | M/s | deliveries/s | frames/s | complete | p50 ms | p99 ms "
        "| server CPU % | deliveries per CPU-s | RSS MB | loadgen CPU % | load 1m |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in results:
        lines.append(
            f"| {r.server} | {r.clients} | {r.rate} | {r.deliveries_per_s:,} | "
            f"{r.frames_per_s:,} | {r.completeness:.1%} | {r.p50_ms} | {r.p99_ms} | "
            f"{r.server_cpu_pct} | {r.deliveries_per_cpu_s:,} | {r.server_rss_mb} | "
            f"{r.loadgen_cpu_pct} | {r.load_avg_1m} |"
        )
    return "\n".join(lines)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clients", default="1000,2000")
    p.add_argument("--rates", default="100,500,1000")
    p.add_argument("--servers", default="berrylive,node-merged,node")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    a = p.parse_args()
    results: list[Result] = []
    for n in (int(x) for x in a.clients.split(",")):
        for m in (int(x) for x in a.rates.split(",")):
            for kind in a.servers.split(","):
                r = await run_one(kind, n, m, a.warmup, a.window)
                results.append(r)
                print(json.dumps(asdict(r)), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(table(results))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
