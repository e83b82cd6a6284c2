"""Drill 2: SIGKILL of Redis or PostgreSQL in the middle of a flash sale under load.

Promised (as drill 1): no oversell, every buyer told "ordered" has a durable order, no
buyer over the limit, Redis stock + orders = the sale's stock; and buys resume by
themselves once the store is back (no restart of berrylive).

Faults (``--fault``):

* ``redis``: a valkey-server of the drill's own (append-only file, fsync every second, as
  a machine's Redis) is SIGKILLed and restarted on the same dir: the AOF catches up to
  within its last second.
* ``redis-rollback``: the same, but it comes back from a copy of its files taken
  ``--rollback`` s before the kill (an older snapshot, a replica that missed writes): stock,
  per-user counts and idempotency keys of the last seconds are gone from Redis, the orders
  are not.
* ``embedded``: the valkey-server berrylive started itself (its child) is SIGKILLed.
* ``postgres``: a PostgreSQL of the drill's own (fsync on) loses its postmaster and every
  backend to SIGKILL and is restarted after ``--down`` s (crash recovery).

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.store_kill \\
        --fault redis-rollback --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench.faults.harness import (
    Answer,
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
)

FAULTS = ("redis", "redis-rollback", "embedded", "postgres")


def resumed_after(answers: list[Answer], t: float) -> float | None:
    """Seconds from ``t`` (into the load) to the first buy sent after it that got 201."""
    ok = [a.sent + a.latency for a in answers if a.sent >= t and a.status == 201]
    return round(min(ok) - t, 2) if ok else None


async def drill(
    root: Path,
    fault: str,
    rate: float,
    seconds: float,
    fault_at: float,
    stock: int,
    connections: int = 50,
    down: float = 1.0,
    rollback: float = 2.0,
    postgres: bool = False,
    grace: float = 2.0,
    resume_timeout: float = 30.0,
    after: float = 4.0,
) -> dict[str, Any]:
    assert fault in FAULTS, fault
    root = root.resolve()
    data = root / "data"
    extra = reconcile_env(grace)
    redis: RedisServer | None = None
    pg: PostgresServer | None = None
    try:
        if fault in ("redis", "redis-rollback"):
            redis = RedisServer(root)
            redis.start()
            extra["REDIS_URL"] = redis.url
        if postgres or fault == "postgres":
            pg = PostgresServer()
            pg.start()
            pg.ensure_db()
            extra["DATABASE_URL"] = pg.url
        node, database_url = await start_sale_node(data, extra)
        try:
            token = await login(node)
            sale_id = await create_sale(node, token, stock)
            # a second sale that never sells out: its buyer (5 buys/s) shows when buys work
            probe_sale = await create_sale(node, token, 100_000)
            buyers = Buyers(node.http_port, node.secret(), sale_id, rate, connections, seconds)
            probe = Buyers(node.http_port, node.secret(), probe_sale, 5, 1, seconds)
            load = buyers.start()
            probing = probe.start()
            buyers.end = probe.end = buyers.started + 3600  # until the store is back
            snap = root / "redis-older"
            if fault == "redis-rollback":
                assert redis is not None
                at = fault_at - rollback
                await asyncio.sleep(max(0.0, buyers.started + at - time.perf_counter()))
                redis.snapshot(snap)
            await asyncio.sleep(max(0.0, buyers.started + fault_at - time.perf_counter()))
            t_fault = time.perf_counter() - buyers.started
            if fault in ("redis", "redis-rollback"):
                assert redis is not None
                redis.kill()
                await asyncio.sleep(down)
                if fault == "redis-rollback":
                    redis.restore(snap)
                redis.start()
            elif fault == "embedded":
                kids = [p for p in node.children() if "valkey" in p.name()]
                assert len(kids) == 1, kids
                kids[0].kill()
            else:
                assert pg is not None
                await asyncio.to_thread(pg.kill)
                await asyncio.sleep(down)
                await asyncio.to_thread(pg.start)
            t_back = time.perf_counter() - buyers.started
            # the load goes on for a while after the store is back, whenever that was
            buyers.end = buyers.started + max(seconds, t_back + after)
            probe.end = buyers.started + t_back + resume_timeout
            await load
            while (resumed := resumed_after(probe.answers, t_back)) is None:
                if probing.done():
                    break
                await asyncio.sleep(0.1)
            probe.end = 0.0
            await probing
            restarted_node = False
            if resumed is None:
                # not by themselves: an operator's remedy is a restart of berrylive; the
                # drill then still checks that nothing was lost
                restarted_node = True
                await node.kill()
                await node.start()
            verdict, code = await settle_sale(
                node, token, database_url, sale_id, stock, buyers.answers
            )
        finally:
            await node.kill()
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
    failures = verdict.failures()
    if resumed is None:
        failures.append("buys did not resume by themselves")
    return {
        "drill": "store_kill",
        "fault": fault,
        "database": "postgres" if pg is not None else "sqlite",
        "rate": rate,
        "seconds": round(buyers.end - buyers.started, 2),
        "fault_at_s": round(t_fault, 2),
        "store_down_s": round(t_back - t_fault, 2),
        "rollback_s": rollback if fault == "redis-rollback" else 0,
        "buys_resumed_after_s": resumed,
        "node_restarted_by_drill": restarted_node,
        **sale_figures(stock, buyers, verdict, code, failures),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fault", choices=FAULTS, default="redis")
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--fault-at", type=float, default=4)
    p.add_argument("--stock", type=int, default=0, help="default: 90 %% of the buys offered")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--down", type=float, default=1.0, help="seconds the store stays down")
    p.add_argument("--rollback", type=float, default=2.0, help="redis-rollback: copy age, s")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL for every fault")
    p.add_argument("--grace", type=float, default=2.0)
    a = p.parse_args()
    stock = a.stock or int(0.9 * a.rate * a.seconds)
    run_drill(
        lambda tmp: drill(
            tmp,
            a.fault,
            a.rate,
            a.seconds,
            a.fault_at,
            stock,
            connections=a.connections,
            down=a.down,
            rollback=a.rollback,
            postgres=a.postgres,
            grace=a.grace,
        )
    )


if __name__ == "__main__":
    main()
