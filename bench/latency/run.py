"""Glass-to-glass added by the server, per viewer protocol and audience, side by side.

    flock /tmp/berrylive-bench.lock timeout 1200 .venv/bin/python -m bench.latency.run
    .venv/bin/python -m bench.latency.run --viewers 2,100 --window 5      # quick look
    flock /tmp/berrylive-bench.lock timeout 600 .venv/bin/python -m bench.latency.run \\
        --servers berrylive --protocols rtmp,flv,whep --viewers 1,100        # with WHEP
    flock /tmp/berrylive-bench.lock timeout 900 .venv/bin/python -m bench.latency.run \\
        --servers berrylive --protocols hls,flv,whep --viewers 1,100         # with LL-HLS

For each audience N (outer loop) and each server (inner loop): the server is started fresh
on loopback (bench/media/servers.py), bench/latency/publisher.py pushes bench/media's
720p30 2 Mb/s source over RTMP with the wall clock stamped into every video frame (an SEI
NAL unit), and N viewers play it: a few probe viewers in their own process
(bench/latency/probe.py; shared out over ``--protocols``: HTTP-FLV, RTMP, WHEP through
bench/latency/whep_probe.py, LL-HLS through bench/latency/hls_probe.py) read each stamp
back and record ``now - stamp``, and the rest are bench/media's load generator (HTTP-FLV,
counting bytes). WHEP refuses streams with B-frames, so with ``whep`` among the protocols
every server gets bench/webrtc's B-frame-free source (same picture, rate and GOP) instead
of bench/media's; servers without WHEP or LL-HLS (NMS) give those probes to the other
protocols.
The server's process tree CPU is sampled exactly over the load generator's window (as
bench/media does); the probes' samples from the same window are kept. One clock: the
publisher, the probes and the server share the machine.

Servers: ``berrylive`` (the defaults: coalescing from 200 viewers; ``--berrylive-env``
changes settings), ``berrylive-tick`` (coalescing at every audience with the former tick
settings: 30 ms growing 45 µs per viewer up to 90 ms; since a video frame closes a batch
this now delays audio only), ``node-media-server`` (npm, as in bench/media). At commit
5fbeb62, before pictures closed batches, ``berrylive-tick`` was exactly the former policy
(every frame waiting for the tick); BENCHMARKS.md, "Latency", keeps that run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from bench.latency.publisher import StampingPublisher
from bench.media.clients import DEFAULT_RCVLOWAT, probe
from bench.media.loadgen import raise_nofile_limit
from bench.media.publisher import Source, ensure_source, flv_duration
from bench.media.run import machine_note, run_loadgen
from bench.media.servers import (
    REPO,
    Berrylive,
    NodeMediaServer,
    Server,
    ServerError,
    cpu_seconds,
)
from bench.webrtc.run import run_loadgen as run_webrtc_loadgen
from bench.webrtc.run import source as webrtc_source

RESULTS = REPO / "bench" / "results"


class BerryliveHere(Berrylive):
    """bench/media's berrylive, importing the packages of this working tree (the editable
    install only maps the top-level packages that existed when it was installed)."""

    extra_env: ClassVar[dict[str, str]] = {}
    """``--berrylive-env`` settings (e.g. ``BERRYLIVE_RELAY_WRITE_COALESCE_MS=10``)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        path = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
        self.env.update(self.extra_env)


class BerryliveTick(BerryliveHere):
    """berrylive coalescing at every audience with the former tick settings."""

    name = "berrylive-tick"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.env.update(
            BERRYLIVE_RELAY_WRITE_COALESCE_MS="30",
            BERRYLIVE_RELAY_WRITE_COALESCE_MIN_VIEWERS="0",
            BERRYLIVE_RELAY_WRITE_COALESCE_PER_VIEWER_US="45",
            BERRYLIVE_RELAY_WRITE_COALESCE_MAX_MS="90",
        )


SERVERS: dict[str, type[Server]] = {
    c.name: c for c in (BerryliveHere, BerryliveTick, NodeMediaServer)
}


PROTOCOLS = ("flv", "rtmp", "whep", "hls")


def nobf_source(duration: int) -> Source:
    """bench/webrtc's source (no B-frames, so WHEP plays it) as a bench/media Source."""
    path = webrtc_source(duration)
    media = flv_duration(path)
    return Source(
        path, media, path.stat().st_size * 8 / media, f"bench.webrtc.run.source({duration})"
    )


def whep_play_url(server: Server) -> str:
    """The WHEP endpoint of the stream, or "" for a server without WHEP."""
    if isinstance(server, Berrylive):
        return f"http://127.0.0.1:{server.ports['http']}/whep/live/bench"
    return ""


def hls_play_url(server: Server) -> str:
    """The LL-HLS playlist of the stream, or "" for a server without LL-HLS (NMS)."""
    if isinstance(server, Berrylive):
        return f"http://127.0.0.1:{server.ports['http']}/live/bench.m3u8"
    return ""


def rtmp_play_url(server: Server) -> str:
    if isinstance(server, Berrylive):
        return f"rtmp://127.0.0.1:{server.ports['rtmp']}/live/bench"
    if isinstance(server, NodeMediaServer):
        return f"rtmp://127.0.0.1:{server.rtmp_port}/live/bench"
    raise ValueError(server.name)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 1)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": round(max(values), 1) if values else None,
        "mean": round(statistics.fmean(values), 1) if values else None,
    }


class ProbeProcess:
    """bench/latency/probe.py in its own process; ``finish()`` returns its samples."""

    def __init__(self, urls: dict[str, str], counts: dict[str, int], skip: float) -> None:
        self.cmd = [sys.executable, "-m", "bench.latency.probe", "--skip", str(skip)]
        for proto, count in counts.items():
            if count:
                self.cmd += [f"--{proto}", urls[proto], f"--{proto}-probes", str(count)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise ServerError("probe process did not start")

    async def finish(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), 30)
        finally:
            if self.proc.returncode is None:
                try:
                    await asyncio.wait_for(self.proc.wait(), 10)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        result: dict[str, Any] | None = next((x for x in lines if x.get("event") == "result"), None)
        if result is None:
            err = (await self.proc.stderr.read()).decode(errors="replace")
            raise ServerError(f"probe process gave no result: {err[-1500:]}")
        return result


def split_probes(
    n: int, probes: int, protocols: tuple[str, ...] = ("flv", "rtmp")
) -> dict[str, int]:
    """Probe viewers per protocol among ``n`` viewers: ``min(n, probes)`` shared out as
    evenly as can be, the earlier protocols taking the remainder."""
    total = min(n, probes)
    if not protocols:
        return {}
    each, extra = divmod(total, len(protocols))
    return {p: each + (i < extra) for i, p in enumerate(protocols)}


async def run_case(
    server_cls: type[Server], n: int, args: argparse.Namespace, source: Source
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"g2g-{server_cls.name}-"))
    server = server_cls(workdir)
    publisher: StampingPublisher | None = None
    probes: ProbeProcess | None = None
    ok = False
    try:
        await server.start()
        publisher = StampingPublisher(source, await server.push_url(), workdir / "pub.log")
        publisher.start()
        url = server.play_url()
        deadline = time.monotonic() + args.stream_timeout
        ttfk = None
        while ttfk is None and time.monotonic() < deadline:
            if not publisher.alive:
                raise ServerError(f"publisher exited: {publisher.log_path.read_text()[-1000:]}")
            ttfk = await probe(url, timeout=3)
        if ttfk is None:
            raise ServerError(f"no keyframe from {url} within {args.stream_timeout:.0f} s")
        urls = {
            "flv": url,
            "rtmp": rtmp_play_url(server),
            "whep": whep_play_url(server),
            "hls": hls_play_url(server),
        }
        protocols = tuple(p for p in args.protocols if urls[p])
        counts = split_probes(n, args.probes, protocols)
        bulk = n - sum(counts.values())
        load1 = os.getloadavg()[0]
        probes = ProbeProcess(urls, counts, args.skip)
        await probes.start()
        if bulk > 0 and args.bulk == "whep" and urls["whep"]:
            result = await whep_loadgen(server, urls["whep"], bulk, args, source)
            t_end = float(result["end_wall"])  # the probes' samples of the same window
            window = float(result["window_s"])
            cpu = float(result["cpu_s"])
        elif bulk > 0:
            result = await run_loadgen(server, url, bulk, args, source, publisher)
            t_end = time.time()
            window = float(result["window_s"])
            cpu = float(result["cpu_s"])
        else:
            await asyncio.sleep(args.skip + args.warmup)
            c0, t0 = cpu_seconds(server.pid), time.perf_counter()
            await asyncio.sleep(args.window)
            cpu, window = cpu_seconds(server.pid) - c0, time.perf_counter() - t0
            t_end = time.time()
            result = {}
        got = await probes.finish()
        probes = None
        if not publisher.alive:
            raise ServerError("publisher died during the measurement")
        per_proto = {}
        for proto, samples in got["samples"].items():
            kept = [ms for wall, ms in samples if t_end - window - 0.5 <= wall <= t_end]
            base = proto.removesuffix("-audio").removesuffix("-read").removesuffix("-first")
            if counts.get(base) and (kept or base == proto):
                per_proto[proto] = summary(kept)
        ok = True
        return {
            "server": server.name,
            "version": server.version(),
            "viewers": n,
            "probes": counts,
            "bulk": args.bulk if bulk > 0 else None,
            "source": source.encode_command,
            "window_s": round(window, 2),
            "cpu_s": round(cpu, 3),
            "server_cpu_pct": round(100 * cpu / window, 1),
            "cpu_us_per_viewer_s": round(cpu / (n * window) * 1e6, 1),
            "g2g_ms": per_proto,
            "probe_errors": got.get("errors", []),
            "probe_cpu_pct": got.get("cpu_pct"),
            "whep_probe_totals": got.get("whep"),
            "hls_probe_totals": got.get("hls"),
            "loadgen": {
                k: result.get(k)
                for k in ("share_ge_90pct", "errors", "loadgen_cpu_pct", "other_cores", "loss_pct")
            },
            "loadavg_1min": round(load1, 2),
            "server_command": server.command_line(),
            "publisher_command": " ".join(publisher.cmd),
        }
    finally:
        if probes is not None and probes.proc is not None and probes.proc.returncode is None:
            probes.proc.kill()
            await probes.proc.wait()
        if publisher is not None:
            publisher.stop()
        server.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"  logs kept in {workdir}", file=sys.stderr)


async def whep_loadgen(
    server: Server, url: str, viewers: int, args: argparse.Namespace, source: Source
) -> dict[str, Any]:
    """``--bulk whep``: the other viewers are bench/webrtc's light WHEP viewers (ICE, DTLS,
    SRTP unprotect, no depacketizing), one process per 200, the server sampled over their
    common window; the same keys as :func:`bench.media.run.run_loadgen`'s result."""
    argv = [
        "--url", url, "--viewers", str(viewers), "--window", str(args.window),
        "--warmup", str(args.warmup), "--settle-timeout", str(args.settle_timeout),
        "--video-bitrate", str(0.85 * source.bitrate_bps), "--procs", str(-(-viewers // 200)),
    ]  # fmt: skip
    m = await run_webrtc_loadgen("bench.webrtc.loadgen", argv, server.pid)
    lg = m["loadgen"]
    return {
        "window_s": m["span_s"],
        "end_wall": m["end_wall"],
        "cpu_s": m["cpu_s"],
        "share_ge_90pct": lg.get("full_rate_share"),
        "errors": lg.get("failures"),
        "loadgen_cpu_pct": lg.get("loadgen_cpu_pct"),
        "loss_pct": lg.get("loss_pct"),
    }


def _cell(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "-"
    return f"{s['p50']} / {s['p99']}"


def markdown_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    lines = [
        f"Run {report['started']} ({report['duration_s']:.0f} s), {m['cpus']} CPUs "
        f"({m['cpu_model']}), load average at start {la}.",
        "",
        "| server | viewers | HTTP-FLV video p50 / p99 ms | HTTP-FLV audio p50 / p99 | "
        "RTMP video p50 / p99 | RTMP audio p50 / p99 | WHEP video p50 / p99 (read) | "
        "LL-HLS video p50 / p99 (first byte) | "
        "CPU µs / viewer·s | server CPU % | probe CPU % | ≥ 90 % bitrate | load avg (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["cases"]:
        if "failed" in c:
            lines.append(f"| {c['server']} | {c['viewers']} | failed: {c['failed'][:80]} |")
            continue
        share = c["loadgen"].get("share_ge_90pct")
        g = c["g2g_ms"]
        lines.append(
            f"| {c['server']} | {c['viewers']} | "
            + " | ".join(_cell(g.get(k)) for k in ("flv", "flv-audio", "rtmp", "rtmp-audio"))
            + f" | {_cell(g.get('whep'))} ({_cell(g.get('whep-read'))})"
            + f" | {_cell(g.get('hls'))} ({_cell(g.get('hls-first'))})"
            + f" | {c['cpu_us_per_viewer_s']} | "
            f"{c['server_cpu_pct']} | {c.get('probe_cpu_pct', '-')} | "
            f"{'-' if share is None else f'{share:.1%}'} | "
            f"{c['loadavg_1min']} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--viewers", default="2,100,1000,2000", help="comma-separated audiences")
    p.add_argument(
        "--probes", type=int, default=8, help="stamp-reading viewers, shared over --protocols"
    )
    p.add_argument(
        "--protocols",
        default="flv,rtmp",
        type=lambda v: tuple(x.strip() for x in v.split(",") if x.strip()),
        help=f"probe protocols, comma-separated, of {', '.join(PROTOCOLS)}",
    )
    p.add_argument(
        "--bulk",
        choices=("flv", "whep"),
        default="flv",
        help="the viewers beyond the probes: HTTP-FLV (bench/media) or WHEP (bench/webrtc)",
    )
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--skip", type=float, default=3.0, help="probe seconds dropped (GOP cache)")
    p.add_argument("--settle-timeout", type=float, default=30.0)
    p.add_argument("--stream-timeout", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rcvlowat", type=int, default=DEFAULT_RCVLOWAT)
    p.add_argument("--source-duration", type=int, default=60)
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument(
        "--berrylive-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="setting for the berrylive server (not berrylive-tick), e.g. "
        "BERRYLIVE_RELAY_WRITE_COALESCE_MS=10; repeatable",
    )
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    BerryliveHere.extra_env = dict(kv.split("=", 1) for kv in args.berrylive_env)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    runnable = []
    for name in names:
        why = SERVERS[name].available()
        if why:
            print(f"skip {name}: {why}", file=sys.stderr)
        else:
            runnable.append(SERVERS[name])
    started = time.time()
    bad = [p for p in args.protocols if p not in PROTOCOLS]
    if bad or not args.protocols:
        print(f"--protocols: unknown {bad}; choose among {', '.join(PROTOCOLS)}", file=sys.stderr)
        return 2
    source = await asyncio.to_thread(
        nobf_source if "whep" in args.protocols else ensure_source, args.source_duration
    )
    cases: list[dict[str, Any]] = []
    for n in [int(x) for x in args.viewers.split(",")]:
        for server_cls in runnable:
            print(f"== {server_cls.name} N={n}", file=sys.stderr)
            try:
                case = await run_case(server_cls, n, args, source)
            except (ServerError, OSError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                print(f"  FAILED: {why}", file=sys.stderr)
                case = {"server": server_cls.name, "viewers": n, "failed": why[-2000:]}
            else:
                print(f"  {json.dumps({k: case[k] for k in ('g2g_ms', 'cpu_us_per_viewer_s')})}",
                      file=sys.stderr)  # fmt: skip
            cases.append(case)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine_note(),
        "argv": sys.argv[1:],
        "berrylive_env": BerryliveHere.extra_env,
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = RESULTS / f"latency-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    (RESULTS / f"latency-{stamp}.md").write_text(table)
    print(table)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any("failed" in c for c in cases) else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(amain(parse_args(argv))))


if __name__ == "__main__":
    main()
