"""Start a full berrylive node for the flash-sale benchmark and create one big sale.

Prints one JSON line ``{"port", "sale_id", "secret", "prefix"}`` when ready; stops on
SIGTERM/SIGINT. Usage: python -m bench.shop.serve --data-dir DIR [--database-url URL]
[--redis-url URL]. Further nodes of the same run (same data dir, so the same secret; same
database, Redis and key prefix) get ``--sale-id ID --prefix P`` and create nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time

from control.app import create_app
from control.cli import start_http, tune_gc
from control.config import load_config
from core.runtime import RUNTIME
from shop_bridge import SHOP


async def main(args: argparse.Namespace) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    prefix = args.prefix or f"bench:{os.getpid()}:shop"
    env["BERRYLIVE_SHOP_REDIS_PREFIX"] = prefix
    cfg = load_config(
        None, env=env, host="127.0.0.1", http_port=0, rtmp_port=0, data_dir=args.data_dir
    )
    app = create_app(cfg)
    runner = await start_http(cfg, app)  # the listener and GC tuning of `berrylive serve`
    port = app[RUNTIME].http_port
    shop = app[SHOP]
    svc = shop.flash  # the flash sales: their writer and batcher are what the bench counts
    sale_id = args.sale_id  # another node of the same run: the sale exists already
    if not sale_id:
        product = await shop.catalog.create_product(
            {"title": "bench", "skus": [{"price_fen": 9900, "stock": 10**6, "specs": {}}]}
        )
        # the shop sells only for a broadcast it knows, from that broadcast's shelf
        await shop.shelf.set_broadcast("1", "bench-anchor", "live/bench")
        await shop.shelf.put_shelf("1", [(product["id"], True)], "bench")
        now = int(time.time() * 1000)
        sale = await svc.create(
            {
                "broadcast_id": "1",
                "sku_id": product["skus"][0]["id"],
                "sale_price_fen": 990,
                "sale_stock": 100_000,
                "per_user_limit": 1,
                "starts_ms": now - 1000,
                "ends_ms": now + 3600_000,
            },
            "bench",
        )
        sale_id = sale["id"]
    secret = app[RUNTIME].secret  # buyers present viewer tokens signed with it
    tune_gc()  # again: the sale and its caches are long-lived too
    print(
        json.dumps({"port": port, "sale_id": sale_id, "secret": secret, "prefix": prefix}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    written = svc.writer.committed
    stats = {
        "committed": written,
        "lua_batches": svc.batcher.batches,
        "lua_batch_mean": round(svc.batcher.buys / max(1, svc.batcher.batches), 1),
        "write_batches": svc.writer.batches,
        "write_batch_mean": round(written / max(1, svc.writer.batches), 1),
        "insert_ms_mean": round(1000 * svc.writer.insert_seconds / max(1, svc.writer.batches), 2),
    }
    if args.redis_url and not args.sale_id:  # leave nothing behind in a shared Redis
        keys = [k async for k in shop.ctx.redis.scan_iter(match="{" + prefix + ":*", count=1000)]
        for i in range(0, len(keys), 500):
            await shop.ctx.redis.unlink(*keys[i : i + 500])
    await runner.cleanup()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--database-url", default="")
    p.add_argument("--redis-url", default="")
    p.add_argument("--profile", default="", help="write cProfile stats to this file")
    p.add_argument("--prefix", default="", help="Redis key prefix (shared by the run's nodes)")
    p.add_argument("--sale-id", type=int, default=0, help="another node: buy from this sale")
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ns = p.parse_args()
    if ns.profile:
        import cProfile

        cProfile.run("asyncio.run(main(ns))", ns.profile)
    else:
        asyncio.run(main(ns))
