"""Drill 1: SIGKILL of ``berrylive serve`` in the middle of a flash sale under load, restart.

Promised: no oversell; every buyer told "ordered" (201/200) has that order in the database
after the restart; no buyer over the per-user limit; Redis stock + units held by orders =
the sale's stock once reconciliation has finished the reservations the kill cut off.

Driven: a real ``berrylive serve`` (embedded valkey + SQLite by default, or ``--redis`` /
``--postgres`` servers the drill starts itself on free ports); open-loop buyers at
``--rate`` buys/s, each a distinct user with one idempotency key, every answer recorded
client-side; SIGKILL at ``--kill-at`` s, a restart on the same ports at once; the buyers
keep going (their connections break and reconnect). Buys whose outcome the buyer never
learnt (no answer, 503) are retried with the same key after the load, as a buyer's app
would; then the database is read directly and compared with the answers.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.server_kill \\
        --rate 3000 --seconds 8 --kill-at 3 --stock 15000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import psutil

from bench.faults.harness import (
    Buyers,
    PostgresServer,
    RedisServer,
    create_sale,
    login,
    reconcile_env,
    run_drill,
    sale_figures,
    settle_sale,
    start_sale_node,
    wait_for,
)


def valkeys_on(data_dir: Path) -> list[psutil.Process]:
    """valkey-server processes working in this data dir (the embedded one)."""
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if "valkey" in (p.info["name"] or "") and Path(p.cwd()).is_relative_to(data_dir):
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


async def drill(
    root: Path,
    rate: float,
    seconds: float,
    kill_at: float,
    stock: int,
    connections: int = 100,
    kills: int = 1,
    external_redis: bool = False,
    postgres: bool = False,
    grace: float = 2.0,
) -> dict[str, Any]:
    root = root.resolve()
    data = root / "data"
    extra = reconcile_env(grace)
    services: list[Any] = []
    try:
        if external_redis:
            redis = RedisServer(root)
            redis.start()
            services.append(redis)
            extra["REDIS_URL"] = redis.url
        if postgres:
            pg = PostgresServer()
            pg.start()
            services.append(pg)
            pg.ensure_db()
            extra["DATABASE_URL"] = pg.url
        node, database_url = await start_sale_node(data, extra)
        try:
            token = await login(node)
            sale_id = await create_sale(node, token, stock)
            buyers = Buyers(node.http_port, node.secret(), sale_id, rate, connections, seconds)
            load = buyers.start()
            downtimes = []
            for k in range(kills):
                at = kill_at * (k + 1)
                await asyncio.sleep(max(0.0, buyers.started + at - time.perf_counter()))
                t0 = time.perf_counter()
                await node.kill()
                if not external_redis:  # the embedded valkey ends with its parent
                    await wait_for(lambda: not valkeys_on(data), 15, "embedded valkey to end")
                await node.start()
                downtimes.append(round(time.perf_counter() - t0, 2))
            await load
            if not external_redis:
                assert len(valkeys_on(data)) == 1, "not exactly one valkey on the data dir"
            verdict, code = await settle_sale(
                node, token, database_url, sale_id, stock, buyers.answers
            )
        finally:
            await node.kill()
    finally:
        for s in reversed(services):
            s.stop()
    figures = {
        "drill": "server_kill",
        "backend": ("postgres" if postgres else "sqlite")
        + ("+redis" if external_redis else "+embedded valkey"),
        "rate": rate,
        "seconds": seconds,
        "kills": kills,
        "restart_s": downtimes,
        **sale_figures(stock, buyers, verdict, code, verdict.failures()),
    }
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=3000)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--kill-at", type=float, default=3, help="seconds into the load (and every N)")
    p.add_argument("--kills", type=int, default=1)
    p.add_argument("--stock", type=int, default=15000)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--redis", action="store_true", help="a valkey-server of its own (AOF)")
    p.add_argument("--postgres", action="store_true", help="a PostgreSQL of its own")
    p.add_argument("--grace", type=float, default=2.0)
    a = p.parse_args()
    run_drill(
        lambda tmp: drill(
            tmp,
            a.rate,
            a.seconds,
            a.kill_at,
            a.stock,
            connections=a.connections,
            kills=a.kills,
            external_redis=a.redis,
            postgres=a.postgres,
            grace=a.grace,
        )
    )


if __name__ == "__main__":
    main()
