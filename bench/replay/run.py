"""Recording benchmark: CPU per recorded 2 Mbps stream, berrylive vs nginx-rtmp.

For each server and each stream count N: start the server on loopback (free ports), push
N copies of a 2 Mbps 720p30 H.264 + AAC clip with ``ffmpeg -re -stream_loop -1 -c copy``,
wait ``--warmup`` seconds, then sample CPU time (utime + stime from /proc) of the server
side for ``--seconds``:

* berrylive: the server process (Python: RTMP ingest, hub, recorder Viewer, playlist
  polling) + its recorder ffmpeg children (one per stream, ``-c copy`` to HLS). The
  embedded valkey child is reported apart.
* nginx-rtmp: master + worker (Debian nginx + libnginx-mod-rtmp, ``record all`` FLV +
  ``hls on`` 2 s fragments, one worker).

Publishers run on the same machine and are reported apart (identical for both servers).
Health: segments written per stream during the window (expected ~seconds / 2).

    .venv/bin/python -m bench.replay.run --streams 1,4,8 --seconds 20
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {work}/rec;
            record_unique on;
            hls on;
            hls_path {work}/hls;
            hls_fragment 2s;
            hls_playlist_length 3600s;
            hls_nested on;
            hls_cleanup off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def make_clip(path: Path) -> Path:
    if path.exists():
        return path
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "20",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1900k", "-maxrate", "1900k",
         "-bufsize", "1900k", "-g", "60", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "96k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    return path


class Server:
    name = ""
    proc: asyncio.subprocess.Process | None = None

    def __init__(self, work: Path) -> None:
        self.work = work
        self.rtmp_port = free_port()

    async def start(self) -> None: ...

    def push_url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"

    def groups(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def segments(self) -> int:
        raise NotImplementedError

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Berrylive(Server):
    name = "berrylive"
    record = True

    async def start(self) -> None:
        self.http_port = free_port()
        env = {
            **os.environ,
            "BERRYLIVE_INGEST_REQUIRE_AUTH": "false",
            "BERRYLIVE_DANMAKU_ENABLED": "false",
            "BERRYLIVE_SHOP_ENABLED": "false",
            "BERRYLIVE_SERVER_LOG_LEVEL": "warning",
            "BERRYLIVE_WEBRTC_UDP_PORT": "0",  # not 8189: tests or a demo may hold it
            "BERRYLIVE_REPLAY_ENABLED": "true" if self.record else "false",
        }
        with open(self.work / "server.log", "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "control.cli", "serve", "--data-dir", str(self.work),
                "--host", "127.0.0.1", "--rtmp-port", str(self.rtmp_port),
                "--http-port", str(self.http_port), cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await wait_port(self.rtmp_port)

    def groups(self) -> dict[str, list[int]]:
        assert self.proc is not None
        kids = children(self.proc.pid)
        return {
            "python": [self.proc.pid],
            "ffmpeg": [k for k in kids if comm(k).startswith("ffmpeg")],
            "valkey": [k for k in kids if "valkey" in comm(k) or "redis" in comm(k)],
        }

    def segments(self) -> int:
        return sum(1 for _ in (self.work / "replay").glob("r*/p*/seg-*"))


class BerryliveNoRecord(Berrylive):
    """Baseline: the same server with recording off (ingest + hub only)."""

    name = "berrylive-norecord"
    record = False


class NginxRtmp(Server):
    name = "nginx-rtmp"

    async def start(self) -> None:
        # the worker runs as an unprivileged user: let it write its output
        for d in (self.work / "rec", self.work / "hls"):
            d.mkdir()
            d.chmod(0o777)
        self.work.chmod(0o755)
        self.work.parent.chmod(0o755)
        conf = self.work / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(module=NGINX_RTMP_MODULE, work=self.work, port=self.rtmp_port)
        )
        self.proc = await asyncio.create_subprocess_exec(
            "nginx", "-p", str(self.work), "-e", str(self.work / "error.log"), "-c", str(conf),
        )  # fmt: skip
        await wait_port(self.rtmp_port)

    def groups(self) -> dict[str, list[int]]:
        assert self.proc is not None
        return {"nginx": [self.proc.pid, *children(self.proc.pid)]}

    def segments(self) -> int:
        return sum(1 for _ in (self.work / "hls").glob("*/*.ts"))


async def measure(
    server: Server, clip: Path, n: int, warmup: float, seconds: float
) -> dict[str, Any]:
    pubs = []
    for i in range(n):
        args = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(clip), "-c", "copy", "-f", "flv", server.push_url(f"s{i}"),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pubs.append(proc)
    try:
        await asyncio.sleep(warmup)
        groups = server.groups()
        before = {g: sum(cpu_ticks(p) for p in pids) for g, pids in groups.items()}
        pub_before = sum(cpu_ticks(p.pid) for p in pubs)
        seg_before = server.segments()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        after = {g: sum(cpu_ticks(p) for p in pids) for g, pids in groups.items()}
        pub_after = sum(cpu_ticks(p.pid) for p in pubs)
        seg_after = server.segments()
        alive = [p for p in pubs if p.returncode is None]
    finally:
        for p in pubs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in pubs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.wait(), 10)
    cpu = {g: round(100 * (after[g] - before[g]) / TICK / elapsed, 1) for g in groups}
    server_cpu = sum(v for g, v in cpu.items() if g != "valkey")
    per_stream = server_cpu / n
    return {
        "server": server.name,
        "streams": n,
        "cpu_percent": cpu,
        "server_cpu_percent": round(server_cpu, 1),
        "cpu_percent_per_stream": round(per_stream, 2),
        "streams_per_core_estimate": int(100 / per_stream) if per_stream > 0 else None,
        "publishers_cpu_percent": round(100 * (pub_after - pub_before) / TICK / elapsed, 1),
        "segments_per_stream": round((seg_after - seg_before) / n, 1),
        "expected_segments_per_stream": round(elapsed / 2, 1),
        "publishers_alive": len(alive),
        "loadavg": os.getloadavg()[0],
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default="1,4,8", help="comma-separated stream counts")
    ap.add_argument("--servers", default="berrylive,berrylive-norecord,nginx-rtmp")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "replay" / "results.json"))
    args = ap.parse_args()
    if shutil.which("nginx") is None or not NGINX_RTMP_MODULE.exists():
        print("nginx-rtmp missing: apt-get install -y nginx libnginx-mod-rtmp", file=sys.stderr)
    base = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    clip = make_clip(base / "clip2m.flv")
    results = []
    kinds: dict[str, type[Server]] = {
        "berrylive": Berrylive,
        "berrylive-norecord": BerryliveNoRecord,
        "nginx-rtmp": NginxRtmp,
    }
    try:
        for n in [int(x) for x in args.streams.split(",")]:
            for name in args.servers.split(","):
                work = base / f"{name}-{n}"
                work.mkdir()
                server = kinds[name](work)
                await server.start()
                try:
                    res = await measure(server, clip, n, args.warmup, args.seconds)
                finally:
                    await server.stop()
                print(json.dumps(res), flush=True)
                results.append(res)
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
