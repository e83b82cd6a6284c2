"""Micro-batched reservations: one ``buy.lua`` run for many buyers keeps each buy's meaning."""

from __future__ import annotations

import asyncio
import collections
import json

from shop_bridge.flash_batch import BuyBatcher
from shop_bridge.redis_store import BuyArgs
from tests.shop.conftest import make_product, make_sale, uid


def _args(now: int, user: str, key: str, order_id: str, qty: int = 1) -> BuyArgs:
    journal = {"u": user, "q": qty, "k": key, "t": now, "c": None, "cp": None, "ch": "live"}
    return BuyArgs(now, user, qty, key, order_id, journal)


async def test_one_batch_with_every_outcome(shop) -> None:
    """ok, duplicate key (of a buy earlier in the same batch), over the limit, sold out, and
    outside the window, all in one script run, each as if it had run alone."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=3, limit=2)
    sid = sale["id"]
    row = await svc._sale_row(sid)
    assert row is not None
    now = svc.now_ms()

    def batch(row: dict) -> list[BuyArgs]:
        early, late = row["starts_ms"] - 1, row["ends_ms"]
        return [
            _args(now, "ann", "a1", "o1"),  # ok, 2 left
            _args(now, "ann", "a1", "o2"),  # same key again: the first buy's order
            _args(now, "ann", "a2", "o3", qty=2),  # 1 + 2 > limit 2
            _args(now, "bob", "b1", "o4", qty=2),  # ok, 0 left
            _args(now, "cat", "c1", "o5"),  # sold out
            _args(early, "dan", "d1", "o6"),  # before the start
            _args(late, "eve", "e1", "o7"),  # at the end
            _args(now, "bob", "b1", "o8"),  # bob's key again, even though sold out now
        ]

    buys = batch(row)
    results = await svc.flash.buy_many(sid, buys)
    assert [(r.status, r.value) for r in results] == [
        ("ok", "2"),
        ("dup", "o1"),
        ("limit", "1"),
        ("ok", "0"),
        ("sold_out", "0"),
        ("not_started", str(row["starts_ms"])),
        ("ended", str(row["ends_ms"])),
        ("dup", "o4"),
    ]
    snap = await svc.flash.snapshot(sid)
    assert snap.stock == 0
    assert snap.users == {"ann": 1, "bob": 2}
    assert set(snap.journal) == {"o1", "o4"}
    assert snap.journal["o4"] == json.loads(json.dumps(buys[3].journal))
    # the same buys one by one (a fresh sale) give the same answers
    again = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=3, limit=2)
    again_row = await svc._sale_row(again["id"])
    assert again_row is not None
    one_by_one = [(await svc.flash.buy_many(again["id"], [b]))[0] for b in batch(again_row)]
    assert [r.status for r in one_by_one] == [r.status for r in results]


async def test_a_batch_on_a_sale_missing_from_redis_answers_no_sale(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5)
    await svc.flash.drop(sale["id"])
    now = svc.now_ms()
    results = await svc.flash.buy_many(
        sale["id"], [_args(now, "u1", "k", "o1"), _args(now, "u2", "k", "o2")]
    )
    assert [r.status for r in results] == ["no_sale", "no_sale"]
    assert not (await svc.flash.snapshot(sale["id"])).loaded


async def test_batcher_sends_buys_of_one_turn_together(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=30, limit=1)
    other = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=30, limit=1)
    batcher = BuyBatcher(svc.flash, max_batch=16, max_inflight=2)
    now = svc.now_ms()
    futures = [
        batcher.buy(sale["id"] if i % 2 else other["id"], _args(now, f"u{i // 2}", "k", f"o{i}"))
        for i in range(40)
    ]
    results = await asyncio.gather(*futures)
    assert collections.Counter(r.status for r in results) == {"ok": 40}
    # 20 buys per sale in batches of at most 16: two script runs per sale, not 40
    assert batcher.buys == 40 and batcher.batches == 4
    assert await svc.flash.stock(sale["id"]) == 10 and await svc.flash.stock(other["id"]) == 10
    await batcher.stop()


async def test_a_buy_cancelled_before_its_batch_is_sent_reserves_nothing(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    batcher = BuyBatcher(svc.flash)
    now = svc.now_ms()
    gone = batcher.buy(sale["id"], _args(now, "gone", "k", "o-gone"))
    kept = batcher.buy(sale["id"], _args(now, "kept", "k", "o-kept"))
    gone.cancel()
    assert (await kept).status == "ok"
    snap = await svc.flash.snapshot(sale["id"])
    assert snap.users == {"kept": 1} and set(snap.journal) == {"o-kept"} and snap.stock == 4
    await batcher.stop()


async def test_a_failed_script_run_fails_every_buy_of_its_batch(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    batcher = BuyBatcher(svc.flash)
    now = svc.now_ms()
    bad = BuyArgs(now, "bad", "not-a-number", "k", "o-bad", {})  # type: ignore[arg-type]
    futures = [batcher.buy(sale["id"], _args(now, "u1", "k", "o1")), batcher.buy(sale["id"], bad)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    # refused before anything changed: no half-applied batch
    snap = await svc.flash.snapshot(sale["id"])
    assert snap.stock == 5 and snap.users == {} and snap.journal == {}
    # the next turn's batch works again
    assert (await batcher.buy(sale["id"], _args(now, "u2", "k", "o2"))).status == "ok"
    await batcher.stop()
