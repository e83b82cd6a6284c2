"""The ceiling: the flash-sale buy script alone against Redis, pipelined, no HTTP, no DB.

Loads a sale with 10 000 000 stock through the same ``FlashStore`` the server uses, then
runs the same ``buy.lua`` with distinct users in pipelines of --depth EVALSHA calls from
--clients concurrent connections for --seconds; each call reserves for --batch buyers (1: one
buy per script run; the server sends one run per sale per event-loop turn, ~40-80 buys).

    python -m bench.shop.lua_ceiling                         # embedded valkey-server
    python -m bench.shop.lua_ceiling --redis-url redis://127.0.0.1:6379/9
    python -m bench.shop.lua_ceiling --depth 1 --batch 64      # as the server sends them
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from core.redis import EmbeddedValkey
from shop_bridge.redis_store import BuyArgs, FlashStore, buy_entry


async def client(
    store: FlashStore, sale_id: int, cid: int, depth: int, batch: int, deadline: float
) -> int:
    """``depth`` EVALSHA calls per pipeline, each reserving for ``batch`` distinct buyers."""
    k = store.keys(sale_id)
    done = 0
    n = 0
    while time.perf_counter() < deadline:
        pipe = store.redis.pipeline(transaction=False)
        now = int(time.time() * 1000)
        for _ in range(depth):
            buys = []
            for _ in range(batch):
                user = f"c{cid}n{n}"
                n += 1
                journal = {"u": user, "q": 1, "k": "k", "t": now}
                buys.append(buy_entry(BuyArgs(now, user, 1, "k", f"o{cid}x{n}", journal)))
            packed = orjson.dumps(buys)
            pipe.evalsha(store._buy.sha, 5, k.meta, k.stock, k.users, k.idem, k.journal, packed)
        results = await pipe.execute()
        done += sum(1 for r in results for status in orjson.loads(r)[::2] if status == "ok")
    return done


async def run(args: argparse.Namespace) -> dict[str, object]:
    embedded = None
    tmp = None
    url = args.redis_url
    if not url:
        tmp = tempfile.TemporaryDirectory(prefix="berrylive-lua-")
        embedded = EmbeddedValkey(Path(tmp.name), persist=True)
        await embedded.start()
        url = embedded.url
    r = aioredis.Redis.from_url(url, max_connections=args.clients + 4)
    store = FlashStore(r, f"bench:{os.getpid()}:lua")
    sale_id = 1
    now = int(time.time() * 1000)
    try:
        await store.drop(sale_id)
        await store.load(
            sale_id,
            starts_ms=now - 1000,
            ends_ms=now + 3600_000,
            limit=1,
            price_fen=990,
            stock_left=10_000_000,
            expire_at=int(time.time()) + 3600,
            closed=False,
            holders=[],
        )
        # load the script (a buy from before the sale starts: changes nothing)
        await store.buy_many(sale_id, [BuyArgs(0, "w", 1, "w", "w", {})])
        t0 = time.perf_counter()
        counts = await asyncio.gather(
            *(
                client(store, sale_id, c, args.depth, args.batch, t0 + args.seconds)
                for c in range(args.clients)
            )
        )
        elapsed = time.perf_counter() - t0
        await store.drop(sale_id)
    finally:
        await store.close()
        await r.aclose()
        if embedded is not None:
            await embedded.stop()
        if tmp is not None:
            tmp.cleanup()
    return {
        "redis": args.redis_url or "embedded valkey (unix socket, AOF everysec)",
        "clients": args.clients,
        "pipeline_depth": args.depth,
        "buys_per_script_run": args.batch,
        "buys_per_s": round(sum(counts) / elapsed),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis-url", default="")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--depth", type=int, default=100, help="EVALSHA calls per pipeline")
    p.add_argument("--batch", type=int, default=1, help="buys per EVALSHA (the server batches)")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
