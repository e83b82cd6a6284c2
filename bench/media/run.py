"""Side-by-side media fan-out benchmark: berrylive vs nginx-rtmp vs Node-Media-Server.

    .venv/bin/python -m bench.media.run                    # N = 500, 1000, 2000; 20 s windows
    .venv/bin/python -m bench.media.run --quick            # ~1 minute smoke run, N = 100
    .venv/bin/python -m bench.media.run --servers nginx-rtmp,node-media-server --viewers 500

For each N (outer loop) and each server (inner loop, so machine noise spreads evenly):
start the server fresh on loopback, push the 720p30 ~2 Mbps source with ffmpeg, wait for
the stream (a probe viewer gets a keyframe), measure the server's idle-with-publisher CPU,
then run the load generator (a separate process) with N viewers and sample the server's
process tree (CPU time, RSS) exactly over the load generator's measurement window. Results
go to ``bench/results/media-<time>.json`` and ``.md``; ``--update-benchmarks`` also rewrites
the media section of BENCHMARKS.md (between its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.media.clients import DEFAULT_RCVLOWAT, probe
from bench.media.loadgen import raise_nofile_limit
from bench.media.publisher import Publisher, Source, ensure_source
from bench.media.report import markdown_table, update_benchmarks_md
from bench.media.servers import (
    REPO,
    SERVERS,
    Server,
    ServerError,
    cpu_seconds,
    rss_bytes,
)

RESULTS = REPO / "bench" / "results"


@dataclass
class Case:
    server: str
    viewers: int
    result: dict[str, Any] = field(default_factory=dict)


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _own_cpu(loadgen_pid: int, publisher: Publisher) -> float:
    own = cpu_seconds(loadgen_pid)
    if publisher.proc is not None:
        own += cpu_seconds(publisher.proc.pid)
    return own


async def _sample_rss(pid: int, out: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        out.append(await asyncio.to_thread(rss_bytes, pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def run_loadgen(
    server: Server,
    url: str,
    viewers: int,
    args: argparse.Namespace,
    source: Source,
    publisher: Publisher,
) -> dict[str, Any]:
    """Run the load generator; sample the server over its measurement window."""
    cmd = [
        sys.executable, "-m", "bench.media.loadgen", "--url", url, "--viewers", str(viewers),
        "--window", str(args.window), "--warmup", str(args.warmup),
        "--settle-timeout", str(args.settle_timeout), "--concurrency", str(args.concurrency),
        "--rcvlowat", str(args.rcvlowat),
        "--bitrate", str(source.bitrate_bps),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    pid = server.pid
    window: dict[str, float] = {}
    rss: list[int] = []
    stop_rss = asyncio.Event()
    rss_task: asyncio.Task[None] | None = None
    result: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    deadline = args.settle_timeout + args.warmup + args.window + 60
    try:
        async with asyncio.timeout(deadline):
            async for raw in proc.stdout:
                msg = json.loads(raw)
                event = msg.pop("event")
                now = time.perf_counter()
                if event == "measure_start":
                    window["cpu0"], window["t0"] = cpu_seconds(pid), now
                    window["all0"] = _machine_busy_seconds()
                    window["own0"] = _own_cpu(proc.pid, publisher)
                    window["pub0"] = publisher.media_time() or 0.0
                    rss_task = asyncio.create_task(_sample_rss(pid, rss, stop_rss))
                elif event == "measure_end":
                    window["cpu1"], window["t1"] = cpu_seconds(pid), now
                    window["all1"] = _machine_busy_seconds()
                    window["own1"] = _own_cpu(proc.pid, publisher)
                    window["pub1"] = publisher.media_time() or 0.0
                    stop_rss.set()
                elif event == "result":
                    result = msg
                else:
                    events.append({"event": event, **msg})
            await proc.wait()
    finally:
        stop_rss.set()
        if rss_task is not None:
            await rss_task
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode(errors="replace")
    if not result or "t1" not in window:
        raise ServerError(f"load generator failed (rc={proc.returncode}): {stderr[-2000:]}")
    elapsed = window["t1"] - window["t0"]
    cpu = window["cpu1"] - window["cpu0"]
    result.update(
        cpu_s=round(cpu, 3),
        server_cpu_pct=round(100 * cpu / elapsed, 1),
        cpu_us_per_viewer_s=round(cpu / (viewers * elapsed) * 1e6, 2),
        # Media seconds the publisher pushed per second of the window (1.0 = real time;
        # ffmpeg reports every 0.5 s, so expect +-0.05 at a 20 s window).
        publisher_speed=round((window["pub1"] - window["pub0"]) / elapsed, 3),
        # CPU used on this machine by anything but the server, the load generator and the
        # publisher (other work, kernel softirq threads), in cores: the noise indicator.
        other_cores=round(
            ((window["all1"] - window["all0"]) - cpu - (window["own1"] - window["own0"])) / elapsed,
            2,
        ),
        rss_mb_max=round(max(rss) / 2**20, 1) if rss else None,
        rss_mb_end=round(rss[-1] / 2**20, 1) if rss else None,
        loadgen_events=events,
    )
    return result


async def run_case(
    server_cls: type[Server], viewers: int, args: argparse.Namespace, source: Source
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{server_cls.name}-"))
    server = server_cls(workdir)
    publisher: Publisher | None = None
    ok = False
    try:
        await server.start()
        push = await server.push_url()
        publisher = Publisher(source, push, workdir / "publisher.log")
        publisher.start()
        url = server.play_url()
        ttfk: float | None = None
        deadline = time.monotonic() + args.stream_timeout
        while ttfk is None and time.monotonic() < deadline:
            if not publisher.alive:
                raise ServerError(f"publisher exited: {publisher.log_path.read_text()[-1000:]}")
            ttfk = await probe(url, timeout=3)
            if ttfk is None:
                await asyncio.sleep(0.3)
        if ttfk is None:
            raise ServerError(f"no keyframe from {url} within {args.stream_timeout:.0f} s")
        # Ingest-only cost (publisher connected, no viewers), to separate it from fan-out.
        c0, t0 = cpu_seconds(server.pid), time.perf_counter()
        await asyncio.sleep(args.baseline)
        base_pct = 100 * (cpu_seconds(server.pid) - c0) / (time.perf_counter() - t0)
        idle_rss = rss_bytes(server.pid)
        result = await run_loadgen(server, url, viewers, args, source, publisher)
        if not publisher.alive:
            raise ServerError("publisher died during the measurement")
        window = result["window_s"]
        marginal = (result["cpu_s"] - base_pct / 100 * window) / (viewers * window) * 1e6
        result.update(
            server=server.name,
            version=server.version(),
            play_url=url,
            server_command=server.command_line(),
            publisher_command=" ".join(publisher.cmd),
            baseline_cpu_pct=round(base_pct, 1),
            idle_rss_mb=round(idle_rss / 2**20, 1),
            marginal_cpu_us_per_viewer_s=round(marginal, 2),
            probe_ttfk_ms=round(ttfk * 1000, 1),
        )
        ok = True
        return result
    finally:
        if publisher is not None:
            publisher.stop()
        server.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"  logs kept in {workdir}", file=sys.stderr)


def machine_note() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated: " + ", ".join(SERVERS)
    )
    p.add_argument("--viewers", default="500,1000,2000", help="comma-separated viewer counts")
    p.add_argument("--window", type=float, default=20.0, help="measurement window, seconds")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--baseline", type=float, default=3.0, help="seconds of ingest-only CPU sampling"
    )
    p.add_argument("--settle-timeout", type=float, default=20.0)
    p.add_argument("--stream-timeout", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--rcvlowat",
        type=int,
        default=DEFAULT_RCVLOWAT,
        help="viewers' SO_RCVLOWAT once counting (0 = wake per server write)",
    )
    p.add_argument("--source-duration", type=int, default=60)
    p.add_argument("--quick", action="store_true", help="smoke run: N=100, 5 s windows")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument(
        "--update-benchmarks",
        action="store_true",
        help="rewrite the media section of BENCHMARKS.md with this run",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.viewers, args.window, args.warmup, args.baseline = "100", 5.0, 1.0, 1.0
        args.settle_timeout = 10.0
    return args


async def amain(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    counts = [int(n) for n in args.viewers.split(",")]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown servers {unknown}; choose from {list(SERVERS)}")
    skipped: dict[str, str] = {}
    runnable: list[type[Server]] = []
    for name in names:
        why = SERVERS[name].available()
        if why:
            skipped[name] = why
            print(f"skip {name}: {why}", file=sys.stderr)
        else:
            runnable.append(SERVERS[name])
    started = time.time()
    source = await asyncio.to_thread(ensure_source, args.source_duration)
    print(f"source {source.path.name}: {source.bitrate_bps / 1e6:.2f} Mb/s FLV", file=sys.stderr)
    cases: list[dict[str, Any]] = []
    for n in counts:
        for server_cls in runnable:
            label = f"{server_cls.name} N={n}"
            print(f"== {label}", file=sys.stderr)
            t = time.monotonic()
            try:
                result = await run_case(server_cls, n, args, source)
            except (ServerError, OSError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError):
                    why = f"timed out ({why})"
                print(f"  FAILED: {why}", file=sys.stderr)
                result = {"server": server_cls.name, "viewers": n, "failed": why[-2000:]}
            else:
                print(
                    f"  cpu {result['cpu_us_per_viewer_s']} us/viewer-s "
                    f"({result['server_cpu_pct']}% cpu), rss {result['rss_mb_max']} MB, "
                    f">=90%: {result['share_ge_90pct']:.1%}, ttfk p50 {result['ttfk_ms_p50']} ms, "
                    f"publisher x{result['publisher_speed']}, "
                    f"other load {result['other_cores']} cores, "
                    f"loadgen {result['loadgen_cpu_pct']}% ({time.monotonic() - t:.0f} s)",
                    file=sys.stderr,
                )
            cases.append(result)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine_note(),
        "argv": sys.argv[1:],
        "source": {
            "path": source.path.name,
            "bitrate_bps": round(source.bitrate_bps),
            "duration_s": source.duration_s,
            "encode_command": source.encode_command,
        },
        "skipped": skipped,
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    json_path = RESULTS / f"media-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    (RESULTS / f"media-{stamp}.md").write_text(table)
    print(table)
    print(f"wrote {json_path}", file=sys.stderr)
    if args.update_benchmarks:
        update_benchmarks_md(REPO / "BENCHMARKS.md", report, table)
        print("updated BENCHMARKS.md (media section)", file=sys.stderr)
    return 1 if any("failed" in c for c in cases) else 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        code = asyncio.run(amain(args))
    else:
        code = uvloop.run(amain(args))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
