"""Viewers sustained by ``berrylive cluster --edges N`` versus one ``berrylive serve`` process.

    .venv/bin/python -m bench.cluster.run --viewers 400,800,1200 --window 15
    .venv/bin/python -m bench.cluster.run --quick          # N = 200, one short window

For each N (outer loop) and each setup (inner loop: ``single`` = one process, ``cluster``
= ``berrylive cluster --edges 2`` = origin + 2 edges), start the setup fresh on loopback,
push the media benchmark's 720p30 ~2 Mb/s source with ffmpeg to the origin, wait for a
probe viewer to get a keyframe (through each edge for the cluster), then run two load
generator processes (``bench.media.loadgen``, N/2 viewers each; for the cluster one per
edge, for the single process both on it) and sample the setup's process tree CPU over the
load generators' window. Criterion (the media-path benchmark's): a viewer is served when
it received >= 90 % of the stream's bitrate over the window; N is *sustained* when >= 99 %
of the viewers were. Results: ``bench/results/cluster-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.media.clients import probe
from bench.media.loadgen import raise_nofile_limit
from bench.media.publisher import Publisher, ensure_source
from bench.media.servers import REPO, ServerError, cpu_seconds, stop_process

RESULTS = REPO / "bench" / "results"
BERRYLIVE = Path(sys.executable).parent / "berrylive"
LISTEN = re.compile(r"(?:\[(\S+)\] )?.*(http|rtmp) listening on [0-9.]+:(\d+)")
SECRET = "bench-secret-loopback-only"
SUSTAINED = 0.99


class Setup:
    def __init__(self, kind: str, workdir: Path, edges: int) -> None:
        self.kind = kind
        self.workdir = workdir
        self.edges = edges
        self.data = workdir / "data"
        self.log = workdir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, dict[str, int]] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
        for k in ("REDIS_URL", "DATABASE_URL"):
            self.env.pop(k, None)
        self.env["BERRYLIVE_SECRET"] = SECRET
        self.env["BERRYLIVE_WEBRTC_UDP_PORT"] = "0"  # not 8189: tests or a demo may hold it
        # Every viewer comes from 127.0.0.1: no per-address cap, room for 10 000 viewers.
        self.env.update(BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS_PER_IP="0")
        self.env.update(BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS="12000")

    @property
    def command(self) -> list[str]:
        common = ["--host", "127.0.0.1", "--http-port", "0", "--rtmp-port", "0"]
        common += ["--data-dir", str(self.data)]
        if self.kind == "single":
            return [str(BERRYLIVE), "serve", *common]
        return [str(BERRYLIVE), "cluster", "--edges", str(self.edges), *common]

    def nodes_expected(self) -> list[str]:
        if self.kind == "single":
            return ["single"]
        return ["origin", *(f"edge-{i}" for i in range(1, self.edges + 1))]

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        want = self.nodes_expected()
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.kind} exited: {self.log.read_text()[-2000:]}")
            for m in LISTEN.finditer(self.log.read_text(errors="replace")):
                node = m.group(1) or "single"
                self.ports.setdefault(node, {})[m.group(2)] = int(m.group(3))
            if all(len(self.ports.get(n, {})) == 2 for n in want):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.kind} did not start: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)

    def origin(self) -> str:
        return "single" if self.kind == "single" else "origin"

    def push_url(self) -> str:
        out = subprocess.run(
            [str(BERRYLIVE), "push-url", "bench", "--data-dir", str(self.data)],
            env=self.env, capture_output=True, check=True, text=True,
        ).stdout.split()  # fmt: skip
        url = [u for u in out if u.startswith("rtmp://")][-1]
        rtmp = self.ports[self.origin()]["rtmp"]
        return re.sub(r"^rtmp://[^/]+", f"rtmp://127.0.0.1:{rtmp}", url)

    def play_urls(self) -> list[str]:
        nodes = ["single"] if self.kind == "single" else [f"edge-{i}" for i in (1, 2)]
        return [f"http://127.0.0.1:{self.ports[n]['http']}/live/bench.flv" for n in nodes]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=15)


async def loadgen(url: str, viewers: int, args: argparse.Namespace, bitrate: float) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.media.loadgen", "--url", url, "--viewers", str(viewers),
        "--window", str(args.window), "--warmup", str(args.warmup), "--bitrate", str(bitrate),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO),
    )  # fmt: skip
    return proc


async def run_case(kind: str, n: int, args: argparse.Namespace, src: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{kind}-"))
    setup = Setup(kind, work, 2)
    pub: Publisher | None = None
    try:
        await setup.start()
        pub = Publisher(src, setup.push_url(), work / "ffmpeg.log")
        pub.start()
        for url in setup.play_urls():
            for _ in range(30):
                if await probe(url, 5) is not None:
                    break
                await asyncio.sleep(0.5)
            else:
                raise ServerError(f"no keyframe at {url}")
        urls = setup.play_urls()
        split = [n // 2, n - n // 2]
        targets = [(urls[i % len(urls)], split[i]) for i in range(2)]
        procs = [await loadgen(u, v, args, src.bitrate_bps) for u, v in targets]
        assert setup.proc is not None
        pid = setup.proc.pid
        started = 0
        cpu0 = t0 = 0.0
        results: list[dict[str, Any]] = []

        async def read(p: asyncio.subprocess.Process) -> None:
            nonlocal started, cpu0, t0
            assert p.stdout is not None
            async for line in p.stdout:
                ev = json.loads(line)
                if ev["event"] == "measure_start":
                    started += 1
                    if started == 1:
                        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                elif ev["event"] == "result":
                    results.append(ev)

        cpu1 = t1 = 0.0

        async def sample_end() -> None:
            nonlocal cpu1, t1
            while not results:
                await asyncio.sleep(0.05)
            cpu1, t1 = cpu_seconds(pid), time.perf_counter()

        await asyncio.gather(*(read(p) for p in procs), sample_end())
        for p in procs:
            await p.wait()
        if len(results) != 2:
            raise ServerError("a load generator failed")
        viewers = sum(r["viewers"] for r in results)
        served = sum(r["share_ge_90pct"] * r["viewers"] for r in results)
        return {
            "setup": kind,
            "viewers": viewers,
            "share_ge_90pct": round(served / viewers, 4),
            "sustained": served / viewers >= SUSTAINED,
            "rate_mbps_p1": min(r["rate_mbps_p1"] for r in results),
            "rate_mbps_p50": sorted(r["rate_mbps_p50"] for r in results)[0],
            "ttfk_ms_p50": max(r["ttfk_ms_p50"] or 0 for r in results),
            "ttfk_ms_p99": max(r["ttfk_ms_p99"] or 0 for r in results),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / max(1e-3, t1 - t0), 1),
            "loadgen_cpu_pct": sum(r["loadgen_cpu_pct"] for r in results),
            "errors": sum(sum(r["errors"].values()) for r in results),
            "error_kinds": {k: v for r in results for k, v in r["errors"].items()},
            "with_keyframe": sum(r["with_keyframe"] for r in results),
            "processes": len(setup.nodes_expected()),
            "command": "berrylive " + " ".join(setup.command[1:]).replace(str(work), "DIR"),
        }
    finally:
        if pub is not None:
            pub.stop()
        setup.stop()
        shutil.rmtree(work, ignore_errors=True)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Run {report['started']}, {report['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['loadavg'])}, stream "
        f"{report['bitrate_bps'] / 1e6:.2f} Mb/s, window {report['window']} s.",
        "",
        "| setup | viewers | ≥ 90 % bitrate | sustained | rate p1 Mb/s "
        "| first keyframe p50 / p99 ms | server CPU % | load gen CPU % | errors |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in report["cases"]:
        if "failed" in c:
            lines.append(f"| {c['setup']} | {c['viewers']} | failed: {c['failed'][:100]} |")
            continue
        lines.append(
            f"| {c['setup']} | {c['viewers']} | {c['share_ge_90pct'] * 100:.1f} % "
            f"| {'yes' if c['sustained'] else 'no'} | {c['rate_mbps_p1']} "
            f"| {c['ttfk_ms_p50']} / {c['ttfk_ms_p99']} | {c['server_cpu_pct']} "
            f"| {c['loadgen_cpu_pct']:.0f} | {c['errors']} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    src = ensure_source()
    counts = [200] if args.quick else [int(x) for x in args.viewers.split(",")]
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": psutil.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "platform": platform.platform(),
        "bitrate_bps": src.bitrate_bps,
        "window": args.window,
        "cases": [],
    }
    for n in counts:
        for kind in args.setups.split(","):
            t = time.monotonic()
            try:
                case = await run_case(kind, n, args, src)
            except Exception as exc:
                case = {"setup": kind, "viewers": n, "failed": repr(exc)}
            report["cases"].append(case)
            print(json.dumps(case), f"({time.monotonic() - t:.0f} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"cluster-{stamp}.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (RESULTS / f"cluster-{stamp}.md").write_text(table)
    print(table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--viewers", default="400,800,1200")
    p.add_argument("--setups", default="single,cluster")
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--quick", action="store_true")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
