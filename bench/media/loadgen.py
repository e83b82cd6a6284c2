"""Load generator process: N viewers of one stream, measured over a fixed window.

    python -m bench.media.loadgen --url http://127.0.0.1:8080/live/bench.flv \\
        --viewers 1000 --window 20 --bitrate 2000000

Opens the viewers with bounded connect concurrency, waits until each has its first video
keyframe (or ``--settle-timeout``), lets ``--warmup`` seconds pass, then counts each
viewer's bytes over ``--window`` seconds. Progress goes to stdout as JSON lines, so a driver
can sample the server exactly over the window:

    {"event": "ready", ...}  {"event": "measure_start"}  {"event": "measure_end"}
    {"event": "result", ...summary...}

One process, one uvloop loop, one shared receive buffer: the generator must stay much
cheaper than the servers it measures (its own CPU share is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from typing import Any

from bench.media.clients import (
    DEFAULT_RCVLOWAT,
    PlayTarget,
    Viewer,
    _ViewerProtocol,
    open_viewer,
)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    target = PlayTarget.from_url(args.url)
    viewers = [Viewer(i) for i in range(args.viewers)]
    protos: list[_ViewerProtocol | None] = [None] * args.viewers
    loop = asyncio.get_running_loop()
    settled = [loop.create_future() for _ in viewers]
    gate = asyncio.Semaphore(args.concurrency)

    async def start(i: int) -> None:
        async with gate:
            try:
                protos[i] = await open_viewer(target, viewers[i], settled[i])
            except asyncio.CancelledError:
                viewers[i].error = "connect not done within the settle timeout"
                raise

    t0 = time.perf_counter()
    emit("connecting", viewers=args.viewers, proto=target.proto)
    # Connects and first keyframes share one deadline: a server that stops accepting must
    # not hang the run (the stuck viewers count as failures).
    starts = [asyncio.create_task(start(i)) for i in range(args.viewers)]
    _, pending = await asyncio.wait(starts, timeout=args.settle_timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    connected_at = time.perf_counter() - t0
    remaining = max(0.0, args.settle_timeout - connected_at)
    if remaining:
        await asyncio.wait(settled, timeout=remaining)
    ready = sum(1 for v in viewers if v.first_keyframe is not None and v.closed is None)
    emit(
        "ready",
        connect_s=round(connected_at, 3),
        settle_s=round(time.perf_counter() - t0, 3),
        with_keyframe=ready,
    )
    await asyncio.sleep(args.warmup)

    before = [v.nbytes for v in viewers]
    cpu0 = _cpu_seconds()
    m0 = time.perf_counter()
    emit("measure_start")
    await asyncio.sleep(args.window)
    after = [v.nbytes for v in viewers]
    m1 = time.perf_counter()
    cpu1 = _cpu_seconds()
    emit("measure_end")

    elapsed = m1 - m0
    if args.timeline:
        with open(args.timeline, "w") as f:
            f.write("index started_ms connected_ms first_byte_ms first_keyframe_ms\n")
            for v in viewers:
                rel = [
                    "-" if t is None else f"{(t - t0) * 1000:.2f}"
                    for t in (v.started, v.connected, v.first_byte, v.first_keyframe)
                ]
                f.write(f"{v.index} {' '.join(rel)}\n")
    for proto in protos:
        if proto is not None:
            proto.close()
    rates = [(a - b) * 8 / elapsed for a, b in zip(after, before, strict=True)]
    threshold = 0.9 * args.bitrate
    errors: dict[str, int] = {}
    for v in viewers:
        if v.error and not (v.closed and v.closed >= m1):
            key = v.error[:80]
            errors[key] = errors.get(key, 0) + 1
    ttfb = [t for v in viewers if (t := v.ttfb) is not None]
    ttfm = [t for v in viewers if (t := v.ttfm) is not None]
    ttfk = [t for v in viewers if (t := v.ttfk) is not None]
    return {
        "viewers": args.viewers,
        "proto": target.proto,
        "window_s": round(elapsed, 3),
        "connect_s": round(connected_at, 3),
        "connected": sum(1 for v in viewers if v.connected is not None),
        "with_keyframe": len(ttfk),
        "errors": errors,
        "share_ge_90pct": round(sum(1 for r in rates if r >= threshold) / len(rates), 4),
        "bitrate_ref_bps": args.bitrate,
        "rate_mbps_p1": round((percentile(rates, 1) or 0) / 1e6, 3),
        "rate_mbps_p50": round((percentile(rates, 50) or 0) / 1e6, 3),
        "rate_mbps_mean": round(sum(rates) / len(rates) / 1e6, 3),
        "ttfb_ms_p50": _ms(percentile(ttfb, 50)),
        "ttfb_ms_p99": _ms(percentile(ttfb, 99)),
        "ttfm_ms_p50": _ms(percentile(ttfm, 50)),
        "ttfm_ms_p99": _ms(percentile(ttfm, 99)),
        "ttfk_ms_p50": _ms(percentile(ttfk, 50)),
        "ttfk_ms_p99": _ms(percentile(ttfk, 99)),
        "rcvlowat": args.rcvlowat,
        "loadgen_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url",
        required=True,
        help="http://HOST:PORT/APP/STREAM.flv or rtmp://HOST:PORT/APP/STREAM",
    )
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--window", type=float, default=20.0, help="measurement window, seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between ready and the window")
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=20.0,
        help="max seconds from the first connect until all viewers have a keyframe",
    )
    p.add_argument("--concurrency", type=int, default=64, help="connects in flight at once")
    p.add_argument(
        "--rcvlowat",
        type=int,
        default=DEFAULT_RCVLOWAT,
        help="SO_RCVLOWAT once counting (bytes; 0 = wake per server write)",
    )
    p.add_argument(
        "--timeline",
        default="",
        help="write each viewer's start, connect, first byte and first keyframe times here",
    )
    p.add_argument(
        "--bitrate", type=float, required=True, help="stream bitrate, bits/s (for the 90%% share)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_nofile_limit()
    _ViewerProtocol.rcvlowat = args.rcvlowat
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    emit("result", **result)


if __name__ == "__main__":
    main()
