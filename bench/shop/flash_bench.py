"""Flash-sale buys per second and latency at N concurrent buyers, durable write included.

Starts ``bench.shop.serve`` in a subprocess (a full node: embedded valkey + SQLite by
default, or --database-url / --redis-url), then N keep-alive HTTP/1.1 connections each buy
in a loop as distinct users (every buy succeeds: stock 100 000, limit 1), for --seconds.
A buy counts only when the server answered 201, i.e. after the order row was committed.

Two ways to load it:

- closed loop (the default): each connection sends its next buy as soon as the last one is
  answered. This finds the most buys/s; at that saturation the latency is set by the
  throughput itself (Little's law: mean latency = connections / buys per second).
- open loop (``--rate R``): the N connections together offer R buys/s on a fixed schedule
  (connection i sends at ``t0 + (i + k * N) / R``), whatever the server does, as real
  buyers pressing "buy" would. A buy's latency is counted from its *scheduled* time, so a
  server that falls behind is charged for the queue it builds (no coordinated omission,
  as in wrk2); the time from the actual send is reported too (``service_*``).

    python -m bench.shop.flash_bench --concurrency 200 --seconds 10
    python -m bench.shop.flash_bench --concurrency 200 --seconds 10 --rate 3000
    python -m bench.shop.flash_bench --concurrency 200 --seconds 10 --rate 3000 --hog 1
    python -m bench.shop.flash_bench \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench \\
        --redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

from core.tokens import issue_token

LATE_LIMIT = 10.0
"""Open loop: seconds past the window after which buys still due are counted unsent."""


async def buyer(
    port: int,
    secret: str,
    sale_id: int,
    idx: int,
    run_id: str,
    deadline: float,
    warm_until: float,
    lat: list[float],
    when: list[float],
    codes: dict[int, int],
    service: list[float],
    unsent: list[int],
    schedule: tuple[float, float] | None = None,
) -> None:
    """Buy in a loop until ``deadline``: at once after each answer, or at the times of
    ``schedule`` = (first send, interval) in the open loop."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while True:
            now = time.perf_counter()
            due = now
            if schedule is not None:
                due = schedule[0] + n * schedule[1]
                if due > now:
                    await asyncio.sleep(due - now)
                    now = time.perf_counter()
            if due >= deadline:
                return
            if now >= deadline + LATE_LIMIT:  # hopelessly behind: count what was never sent
                unsent.append(int((deadline - due) / schedule[1]) + 1 if schedule else 0)
                return
            body = b'{"idempotency_key": "k"}'
            token = issue_token(secret, f"{run_id}c{idx}n{n}", "buyer")  # the buyer's viewer token
            n += 1
            head = (
                f"POST /api/flash-sales/{sale_id}/buy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-Viewer-Token: {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            status = int(status_line.split()[1])
            if due >= warm_until:
                codes[status] = codes.get(status, 0) + 1
                if status == 201:
                    lat.append(t1 - due)  # = t1 - t0 in the closed loop
                    service.append(t1 - t0)
                    when.append(t1 - warm_until)
    finally:
        writer.close()


async def _cpu_window(pids: list[int], start: float, end: float) -> tuple[float, float, float]:
    """CPU seconds used between ``start`` and ``end`` by the server process trees (with an
    embedded valkey) and by this load generator, and the cores used by everything else."""
    servers = [psutil.Process(pid) for pid in pids]
    me = psutil.Process()

    def sample() -> tuple[float, float, float]:
        procs = [q for s in servers for q in (s, *s.children(recursive=True))]
        srv = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                srv += t.user + t.system
        g = me.cpu_times()
        m = psutil.cpu_times()
        busy = sum(m) - m.idle - getattr(m, "iowait", 0.0)
        return srv, g.user + g.system, busy

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    s0, g0, b0 = sample()
    t0 = time.perf_counter()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    s1, g1, b1 = sample()
    elapsed = time.perf_counter() - t0
    other = ((b1 - b0) - (s1 - s0) - (g1 - g0)) / elapsed
    return s1 - s0, g1 - g0, other


async def run(args: argparse.Namespace) -> dict[str, object]:
    if args.nodes > 1 and not (args.database_url and args.redis_url):
        raise SystemExit("--nodes > 1 needs --database-url and --redis-url (shared by the nodes)")
    # --hog: busy loops standing for other work on the machine (a stream's relay, a build):
    # the server gets a smaller share of the CPU. They end with the run.
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
    try:
        return await _measure(args)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


async def _measure(args: argparse.Namespace) -> dict[str, object]:
    tails: list[str] = []
    with tempfile.TemporaryDirectory(prefix="berrylive-bench-") as data_dir:
        cmd = [sys.executable, "-m", "bench.shop.serve", "--data-dir", data_dir]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        if args.redis_url:
            cmd += ["--redis-url", args.redis_url]
        if args.profile:
            cmd += ["--profile", args.profile]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)]
        try:
            assert procs[0].stdout is not None
            ready = json.loads(procs[0].stdout.readline())
            sale_id, secret = ready["sale_id"], ready["secret"]
            ports = [ready["port"]]
            for _ in range(args.nodes - 1):  # more nodes on the same database and Redis
                more = [*cmd, "--sale-id", str(sale_id), "--prefix", ready["prefix"]]
                procs.append(subprocess.Popen(more, stdout=subprocess.PIPE, text=True))
                assert procs[-1].stdout is not None
                ports.append(json.loads(procs[-1].stdout.readline())["port"])
            run_id = os.urandom(3).hex()  # distinct users in every run (a reused database)
            lat: list[float] = []
            when: list[float] = []
            codes: dict[int, int] = {}
            service: list[float] = []
            unsent: list[int] = []
            start = time.perf_counter()
            warm_until = start + args.warmup
            deadline = warm_until + args.seconds
            n = args.concurrency
            buyers = asyncio.gather(
                *(
                    buyer(
                        ports[i % len(ports)],
                        secret,
                        sale_id,
                        i,
                        run_id,
                        deadline,
                        warm_until,
                        lat,
                        when,
                        codes,
                        service,
                        unsent,
                        (start + 0.2 + i / args.rate, n / args.rate) if args.rate else None,
                    )
                    for i in range(n)
                )
            )
            pids = [p.pid for p in procs]
            cpu = asyncio.ensure_future(_cpu_window(pids, warm_until, deadline))
            await buyers
            cpu_s, gen_s, other = await cpu
        finally:
            for proc in reversed(procs):  # the first node tidies the shared Redis: last
                proc.terminate()
                tails.append(proc.communicate(timeout=60)[0])
    if args.dump:  # one line per buy: seconds into the window, latency in ms
        with open(args.dump, "w") as f:
            f.writelines(f"{w:.4f} {x * 1000:.2f}\n" for w, x in zip(when, lat, strict=True))
    lat.sort()
    service.sort()
    ok = len(lat)

    def pct(values: list[float], p: float) -> float:
        return round(values[min(ok - 1, int(p * ok))] * 1000, 2) if ok else float("nan")

    figures: dict[str, object] = {
        "backend": "postgres+redis" if args.database_url else "embedded (sqlite+valkey)",
        "concurrency": args.concurrency,
        "loop": f"open, {args.rate:g} buys/s offered" if args.rate else "closed",
        "seconds": args.seconds,
        # completed within the window (in an open loop that falls behind, fewer than offered)
        "buys_per_s": round(sum(1 for w in when if w <= args.seconds) / args.seconds),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "max_ms": round(lat[-1] * 1000, 2) if ok else None,
        "statuses": codes,
        "server_cpu_pct": round(100 * cpu_s / args.seconds, 1),
        "server_cpu_us_per_buy": round(1e6 * cpu_s / ok, 1) if ok else None,
        "loadgen_cpu_pct": round(100 * gen_s / args.seconds, 1),
        "other_load_cores": round(other, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "nodes": args.nodes,
        "hogs": args.hog,
        "server": [t.strip().splitlines()[-1] for t in reversed(tails) if t.strip()],
    }
    if args.rate:  # from the actual send: what a server that is never behind would show
        figures["unsent"] = sum(unsent)
        figures["service_p50_ms"] = pct(service, 0.50)
        figures["service_p99_ms"] = pct(service, 0.99)
    return figures


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: buys/s offered by all connections together (0: closed loop)",
    )
    p.add_argument("--database-url", default="")
    p.add_argument("--redis-url", default="")
    p.add_argument(
        "--nodes", type=int, default=1, help="server processes on the same database and Redis"
    )
    p.add_argument(
        "--hog", type=int, default=0, help="busy-loop processes running beside, for the run"
    )
    p.add_argument("--dump", default="", help="write each buy's time and latency to this file")
    p.add_argument("--profile", default="", help="profile the server into this file")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
