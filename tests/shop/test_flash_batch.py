"""Micro-batched reservations: one ``buy.lua`` run for many buyers keeps each buy's meaning."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sqlite3
from collections.abc import Callable

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError
from sqlalchemy import select, text

from shop_bridge.flash_batch import BuyBatcher
from shop_bridge.models import ORDERS, TRANSITIONS
from shop_bridge.order_rows import EXISTS, INSERTED
from shop_bridge.order_writer import QueueFull, WriteFailed
from shop_bridge.redis_store import BuyArgs, BuyResult, FlashStore, buy_entry
from shop_bridge.state import OrderState
from tests.shop.conftest import make_product, make_sale, uid


def _args(now: int, user: str, key: str, order_id: str, qty: int = 1) -> BuyArgs:
    journal = {"u": user, "q": qty, "k": key, "t": now, "c": None, "cp": None, "ch": "live"}
    return BuyArgs(now, user, qty, key, order_id, journal)


async def _writer_rows(shop, user: str) -> tuple[dict, Callable[..., dict]]:
    """A new sale and a maker of its pending order rows for ``user`` (rows handed straight
    to the order writer)."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=10, limit=5)
    ctx = await svc.flash.sale_ctx(sale["id"])
    assert ctx is not None
    now = svc.ctx.now_ms()

    def row(order_id: str, buyer: str = user) -> dict:
        journal = {"u": buyer, "q": 1, "k": order_id, "t": now, "ch": "live"}
        return svc.flash.order_row(ctx, order_id, journal, OrderState.PENDING_PAYMENT)

    return sale, row


async def _order_ids(svc, sale_id: int) -> set[str]:
    async with svc.ctx.engine.connect() as conn:
        res = await conn.execute(select(ORDERS.c.id).where(ORDERS.c.flash_sale_id == sale_id))
        return {r[0] for r in res}


async def test_one_batch_with_every_outcome(shop) -> None:
    """ok, duplicate key (of a buy earlier in the same batch), over the limit, sold out, and
    outside the window, all in one script run, each as if it had run alone."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=3, limit=2)
    sid = sale["id"]
    row = await svc.flash.sale_row(sid)
    assert row is not None
    now = svc.ctx.now_ms()

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
    results = await svc.flash.store.buy_many(sid, buys)
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
    snap = await svc.flash.store.snapshot(sid)
    assert snap.stock == 0
    assert snap.users == {"ann": 1, "bob": 2}
    assert set(snap.journal) == {"o1", "o4"}
    assert snap.journal["o4"] == json.loads(json.dumps(buys[3].journal))
    # the same buys one by one (a fresh sale) give the same answers
    again = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=3, limit=2)
    again_row = await svc.flash.sale_row(again["id"])
    assert again_row is not None
    one_by_one = [(await svc.flash.store.buy_many(again["id"], [b]))[0] for b in batch(again_row)]
    assert [r.status for r in one_by_one] == [r.status for r in results]


MALFORMED_BATCHES = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"{}",
    b"[]",
    b"null",
    b"[1]",
    b'[[1, "u", 1, "u|k", "o"]]',  # five fields
    b'[["now", "u", 1, "u|k", "o", "{}"]]',
    b'[[1, "u", 0, "u|k", "o", "{}"]]',  # qty 0
    b'[[1, "u", -2, "u|k", "o", "{}"]]',
    b'[[1, "u", 1.5, "u|k", "o", "{}"]]',
    b'[[1, "u", "1", "u|k", "o", "{}"]]',
    b'[[1, 7, 1, "u|k", "o", "{}"]]',
    b'[[1, "u", 1, "u|k", "o", {"t": 1}]]',  # the journal must be a string
    b"[" + b"[" * 2000 + b"]" * 2001,  # nesting beyond the decoder's limit
]


async def test_the_buy_script_refuses_a_malformed_batch_and_changes_nothing(shop) -> None:
    """``buy.lua`` checks its packed argument before it touches anything: garbage, a wrong
    shape, or one bad buy after good ones is an error reply and the sale is unchanged."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=2)
    sid = sale["id"]
    now = svc.ctx.now_ms()
    assert (await svc.flash.store.buy_many(sid, [_args(now, "ann", "k", "o1")]))[0].status == "ok"
    before = await svc.flash.store.snapshot(sid)
    k = svc.flash.store.keys(sid)
    keys = [k.meta, k.stock, k.users, k.idem, k.journal]
    good = buy_entry(_args(now, "bob", "k", "o2"))
    cases = [*MALFORMED_BATCHES, orjson.dumps([good, [now, "cat", 0, "cat|k", "o3", "{}"]])]
    for raw in cases:
        with pytest.raises(ResponseError, match="buy: "):
            await svc.ctx.redis.evalsha(svc.flash.store.buy_sha, len(keys), *keys, raw)
    with pytest.raises(ResponseError, match="one argument"):
        await svc.ctx.redis.evalsha(
            svc.flash.store.buy_sha, len(keys), *keys, orjson.dumps([good]), b"x"
        )
    assert await svc.flash.store.snapshot(sid) == before
    # the good buy alone still goes through
    assert (await svc.flash.store.buy_many(sid, [_args(now, "bob", "k", "o2")]))[0].status == "ok"


async def test_the_buy_script_answers_random_arguments_with_an_error_or_results(shop) -> None:
    """Random bytes and random JSON for the packed argument (hypothesis): an error reply or
    a well-formed answer, never a crash of the script or the server (before the sale starts,
    so nothing is reserved whatever the arguments say)."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=2)
    k = svc.flash.store.keys(sale["id"])
    keys = [k.meta, k.stock, k.users, k.idem, k.journal]
    sha = svc.flash.store.buy_sha
    await svc.ctx.redis.hset(k.meta, "start", 2**60)  # not started: no buy can reserve
    (early,) = await svc.flash.store.buy_many(sale["id"], [_args(svc.ctx.now_ms(), "u", "k", "o")])
    assert early.status == "not_started"  # and the script is loaded
    runtime = shop.server.runtime
    sync = redis.Redis.from_url(runtime.redis_url)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
    answers: collections.Counter[str] = collections.Counter()

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()))
    def fuzz(raw: bytes) -> None:
        try:
            reply = sync.evalsha(sha, len(keys), *keys, raw)
        except ResponseError as exc:
            assert "buy: " in str(exc)
            answers["error"] += 1
            return
        out = orjson.loads(reply)
        assert len(out) == 2 * len(orjson.loads(raw)) and set(out[::2]) <= {"not_started", "dup"}
        answers["answered"] += 1

    try:
        # on this thread, the event loop blocked meanwhile (valkey is another process): the
        # server's own tasks must not touch `random` while hypothesis draws examples
        fuzz()
    finally:
        sync.close()
    assert answers["error"] > 0
    assert (await svc.flash.store.snapshot(sale["id"])).users == {}


async def test_buy_batches_go_over_held_lanes_then_the_pool(shop) -> None:
    """With one lane, three concurrent batches (three sales) each get their own answers
    (one over the lane, two through the pool); the lane keeps its connection between
    batches and gives it back on close."""
    svc = shop.svc
    store = FlashStore(svc.ctx.redis, svc.ctx.config.redis_prefix, lanes=1)
    product = await make_product(shop.api)
    sales = [await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5) for _ in "abc"]
    now = svc.ctx.now_ms()
    try:
        for user, left in (("u1", "4"), ("u2", "3")):
            batches = [[_args(now, user, "k", f"{s['id']}{user}")] for s in sales]
            answers = await asyncio.gather(
                *(store.buy_many(s["id"], b) for s, b in zip(sales, batches, strict=True))
            )
            assert answers == [[BuyResult("ok", left)]] * 3
            (lane,) = store.idle_lanes
            assert lane.connection is not None  # held between batches
    finally:
        await store.close()
    for sale in sales:
        assert (await svc.flash.store.snapshot(sale["id"])).users == {"u1": 1, "u2": 1}
    assert store.idle_lanes == [] and lane.connection is None


async def test_a_batch_cancelled_on_a_lane_leaves_no_stale_reply(shop) -> None:
    """A batch cancelled at any point (before, while or after its command is written) must
    never hand its reply to the next batch on the same lane."""
    svc = shop.svc
    store = FlashStore(svc.ctx.redis, svc.ctx.config.redis_prefix, lanes=1)
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=100, limit=1)
    now = svc.ctx.now_ms()
    try:
        for i in range(12):
            first = asyncio.ensure_future(
                store.buy_many(sale["id"], [_args(now, f"gone{i}", "k", f"gone{i}")])
            )
            for _ in range(i % 6):
                await asyncio.sleep(0)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            (res,) = await store.buy_many(sale["id"], [_args(now, f"kept{i}", "k", f"kept{i}")])
            snap = await svc.flash.store.snapshot(sale["id"])
            assert res == BuyResult("ok", str(snap.stock))  # this buy's own answer
            assert f"kept{i}" in snap.journal
    finally:
        await store.close()


async def test_forget_journal_drops_exactly_the_durable_entries_of_each_sale(shop) -> None:
    """After a commit the journal loses those orders' entries: one sale (one HDEL) or
    several (one pipeline); other entries stay for reconciliation."""
    svc = shop.svc
    product = await make_product(shop.api)
    sku = product["skus"][0]["id"]
    a = await make_sale(shop.api, uid(), sku, stock=5)
    b = await make_sale(shop.api, uid(), sku, stock=5)
    now = svc.ctx.now_ms()
    for sale in (a, b):
        buys = [_args(now, f"u{i}", "k", f"{sale['id']}-o{i}") for i in range(3)]
        assert [r.status for r in await svc.flash.store.buy_many(sale["id"], buys)] == ["ok"] * 3
    await svc.flash.store.forget_journal({a["id"]: [f"{a['id']}-o0"]})
    assert set((await svc.flash.store.snapshot(a["id"])).journal) == {
        f"{a['id']}-o1",
        f"{a['id']}-o2",
    }
    await svc.flash.store.forget_journal({a["id"]: [f"{a['id']}-o1"], b["id"]: [f"{b['id']}-o2"]})
    assert set((await svc.flash.store.snapshot(a["id"])).journal) == {f"{a['id']}-o2"}
    assert set((await svc.flash.store.snapshot(b["id"])).journal) == {
        f"{b['id']}-o0",
        f"{b['id']}-o1",
    }
    await svc.flash.store.forget_journal({})  # nothing to do: no command


async def test_a_batch_on_a_sale_missing_from_redis_answers_no_sale(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5)
    await svc.flash.store.drop(sale["id"])
    now = svc.ctx.now_ms()
    results = await svc.flash.store.buy_many(
        sale["id"], [_args(now, "u1", "k", "o1"), _args(now, "u2", "k", "o2")]
    )
    assert [r.status for r in results] == ["no_sale", "no_sale"]
    assert not (await svc.flash.store.snapshot(sale["id"])).loaded


async def test_batcher_sends_buys_of_one_turn_together(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=30, limit=1)
    other = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=30, limit=1)
    batcher = BuyBatcher(svc.flash.store, max_batch=16, max_inflight=2)
    now = svc.ctx.now_ms()
    futures = [
        batcher.buy(sale["id"] if i % 2 else other["id"], _args(now, f"u{i // 2}", "k", f"o{i}"))
        for i in range(40)
    ]
    results = await asyncio.gather(*futures)
    assert collections.Counter(r.status for r in results) == {"ok": 40}
    # 20 buys per sale in batches of at most 16: two script runs per sale, not 40
    assert batcher.buys == 40 and batcher.batches == 4
    assert (
        await svc.flash.store.stock(sale["id"]) == 10
        and await svc.flash.store.stock(other["id"]) == 10
    )
    await batcher.stop()


async def test_a_buy_cancelled_before_its_batch_is_sent_reserves_nothing(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    batcher = BuyBatcher(svc.flash.store)
    now = svc.ctx.now_ms()
    gone = batcher.buy(sale["id"], _args(now, "gone", "k", "o-gone"))
    kept = batcher.buy(sale["id"], _args(now, "kept", "k", "o-kept"))
    gone.cancel()
    assert (await kept).status == "ok"
    snap = await svc.flash.store.snapshot(sale["id"])
    assert snap.users == {"kept": 1} and set(snap.journal) == {"o-kept"} and snap.stock == 4
    await batcher.stop()


async def test_reserved_buys_go_to_the_sink_with_their_row_and_future(shop) -> None:
    """With a sink, a reserved buy's row and future go there (the buyer wakes when the sink
    resolves it); a refused buy resolves with the script's result; a sink refusing one row
    fails that buyer alone; a buyer gone after the send is not handed over."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    handed: list[str] = []

    def sink(row: dict, future: asyncio.Future) -> None:
        if row["id"] == "o-full":
            raise QueueFull()
        handed.append(row["id"])
        asyncio.get_running_loop().call_soon(future.set_result, INSERTED)

    batcher = BuyBatcher(svc.flash.store, sink=sink)
    now = svc.ctx.now_ms()
    ok = batcher.buy(sale["id"], _args(now, "ann", "k", "o-ann"), {"id": "o-ann"})
    again = batcher.buy(sale["id"], _args(now, "ann", "k2", "o-again"), {"id": "o-again"})
    full = batcher.buy(sale["id"], _args(now, "bob", "k", "o-full"), {"id": "o-full"})
    no_row = batcher.buy(sale["id"], _args(now, "cat", "k", "o-cat"))
    gone = batcher.buy(sale["id"], _args(now, "dan", "k", "o-dan"), {"id": "o-dan"})
    await asyncio.sleep(0)  # the batch is on its way
    gone.cancel()
    assert await ok == INSERTED
    refused = await again
    assert isinstance(refused, BuyResult) and refused.status == "limit"
    with pytest.raises(QueueFull):
        await full
    cat = await no_row
    assert isinstance(cat, BuyResult) and cat.status == "ok"
    assert handed == ["o-ann"]  # not the refused, the full, the row-less or the gone one
    snap = await svc.flash.store.snapshot(sale["id"])  # dan's reservation stays in the journal
    assert set(snap.journal) == {"o-ann", "o-full", "o-cat", "o-dan"}
    await batcher.stop()


async def test_a_full_order_queue_answers_busy_and_gives_the_reservation_back(shop) -> None:
    """The writer's queue full: the buyer gets 503 ``busy``, the unit and the user's
    allowance go back to the sale, and the same tap retried later gets its order."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    path = f"/api/flash-sales/{sale['id']}/buy"
    body = {"user_id": "eve", "idempotency_key": "tap"}
    queue = svc.flash.writer.queue
    full: asyncio.Queue = asyncio.Queue(1)
    full.put_nowait(None)
    svc.flash.writer.queue = full  # what submit() sees; the writer tasks wait on the old one
    try:
        status, data = await shop.api.post(path, body)
    finally:
        svc.flash.writer.queue = queue
    assert status == 503 and data["error"]["code"] == "busy", data
    snap = await svc.flash.store.snapshot(sale["id"])
    assert snap.stock == 5 and snap.users.get("eve", 0) == 0
    status, order = await shop.api.post(path, body)
    assert status == 201 and order["user_id"] == "eve"
    assert (await svc.flash.store.snapshot(sale["id"])).stock == 4


async def test_a_failed_script_run_fails_every_buy_of_its_batch(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    batcher = BuyBatcher(svc.flash.store)
    now = svc.ctx.now_ms()
    bad = BuyArgs(now, "bad", "not-a-number", "k", "o-bad", {})  # type: ignore[arg-type]
    futures = [batcher.buy(sale["id"], _args(now, "u1", "k", "o1")), batcher.buy(sale["id"], bad)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    # refused before anything changed: no half-applied batch
    snap = await svc.flash.store.snapshot(sale["id"])
    assert snap.stock == 5 and snap.users == {} and snap.journal == {}
    # the next turn's batch works again
    assert (await batcher.buy(sale["id"], _args(now, "u2", "k", "o2"))).status == "ok"
    await batcher.stop()


async def test_a_write_batch_with_a_conflicting_row_still_writes_the_others(shop) -> None:
    """Group commit: a row that already exists (a late original write, a reused key) makes
    the batch fall back to one transaction per row; the others are written once."""
    svc = shop.svc
    sale, row = await _writer_rows(shop, "wu")
    assert await svc.flash.writer.write(row("w1" * 16, "wu1")) == INSERTED
    before = svc.flash.writer.batches
    outcomes = await asyncio.gather(
        svc.flash.writer.write(row("w2" * 16, "wu2")),
        svc.flash.writer.write(row("w1" * 16, "wu1")),
        svc.flash.writer.write(row("w3" * 16, "wu3")),
    )
    assert outcomes == [INSERTED, EXISTS, INSERTED]
    assert svc.flash.writer.batches == before + 1  # the three went as one batch
    ids = await _order_ids(svc, sale["id"])
    async with svc.ctx.engine.connect() as conn:
        logs = collections.Counter(
            r[0]
            for r in await conn.execute(
                select(TRANSITIONS.c.order_id).where(TRANSITIONS.c.order_id.in_(ids))
            )
        )
    assert ids == {"w1" * 16, "w2" * 16, "w3" * 16}
    assert set(logs.values()) == {1}


async def test_buyers_share_one_read_of_an_expired_sale_context(shop) -> None:
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=50, limit=1)
    reads = 0
    real = svc.flash.sale_row

    async def counted(sale_id: int) -> dict | None:
        nonlocal reads
        reads += 1
        return await real(sale_id)

    svc.flash.sale_row = counted  # type: ignore[method-assign]
    svc.flash.forget(sale["id"])  # as when the cached entry expires
    results = await asyncio.gather(
        *(svc.flash.buy(sale["id"], f"sf{i}", 1, "k", "live") for i in range(30))
    )
    assert all(created for _, created in results)
    assert reads == 1


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_sqlite_writer_leaves_wal_checkpoints_to_its_own_thread(shop) -> None:
    """The writer's commits never checkpoint (the fsync would hold up a batch of buyers);
    the writer process's checkpoint thread does it after commits."""
    svc = shop.svc
    sqlite = svc.flash.writer.sqlite
    assert sqlite is not None  # the embedded backend writes to SQLite
    stats = await sqlite.stats()
    assert stats["autocheckpoint"] == 0
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=20, limit=1)
    results = await asyncio.gather(
        *(svc.flash.buy(sale["id"], f"ck{i}", 1, "k", "live") for i in range(20))
    )
    assert all(created for _, created in results)
    assert (await sqlite.stats())["commits"] > stats["commits"]
    async with asyncio.timeout(10):
        while (await sqlite.stats())["checkpoints"] == stats["checkpoints"]:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_sqlite_writer_process_killed_costs_only_its_batch(shop) -> None:
    """The writer process killed mid-run: the batch on its way fails (its buyer is told;
    nothing half-written) and the next batch starts a new process."""
    svc = shop.svc
    sqlite = svc.flash.writer.sqlite
    assert sqlite is not None  # the embedded backend writes to SQLite
    sale, row = await _writer_rows(shop, "kw")
    assert await svc.flash.writer.write(row("k1" * 16)) == INSERTED
    started = sqlite.started
    proc = sqlite.process
    assert proc is not None and proc.returncode is None
    os.kill(proc.pid, signal.SIGSTOP)  # the next batch stays in the pipe, unwritten...
    second = asyncio.ensure_future(svc.flash.writer.write(row("k2" * 16)))
    async with asyncio.timeout(10):  # the batch is in the pipe, the process cannot answer
        while sqlite.in_flight == 0:
            await asyncio.sleep(0.005)
    assert not second.done()
    proc.kill()  # ...and the process dies (SIGKILL: as the OOM killer would)
    with pytest.raises(WriteFailed, match="exited") as failed:
        await second
    assert isinstance(failed.value.__cause__, sqlite3.OperationalError)
    assert await svc.flash.writer.write(row("k3" * 16)) == INSERTED
    assert sqlite.started == started + 1
    # a process already known dead costs nothing: the next batch starts another one
    proc = sqlite.process
    assert proc is not None
    proc.kill()
    await proc.wait()
    assert await svc.flash.writer.write(row("k4" * 16)) == INSERTED
    assert sqlite.started == started + 2
    ids = await _order_ids(svc, sale["id"])
    assert ids == {"k1" * 16, "k3" * 16, "k4" * 16}


@pytest.mark.parametrize("backend", ["production"], indirect=True)
async def test_postgres_writer_replaces_a_connection_that_died(shop) -> None:
    """The PostgreSQL writer holds its connections; one killed under it fails that batch
    (its buyers get an error, nothing half-written) and the next batch uses a new one."""
    svc = shop.svc
    pg = svc.flash.writer.pg
    assert pg is not None  # the production backend writes to PostgreSQL
    sale, row = await _writer_rows(shop, "pw")
    assert await svc.flash.writer.write(row("p1" * 16)) == INSERTED
    assert len(pg.held) == 1
    raw = pg.held[0]
    async with svc.ctx.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": raw.get_server_pid()})
    # the writer either notices the closed connection first or fails this one batch
    try:
        second = await svc.flash.writer.write(row("p2" * 16))
    except WriteFailed as exc:  # asyncpg: "connection is closed", "another operation ..."
        logging.getLogger(__name__).info("batch on the killed connection failed: %s", exc)
        second = None
    assert await svc.flash.writer.write(row("p3" * 16)) == INSERTED
    ids = await _order_ids(svc, sale["id"])
    assert ("p2" * 16 in ids) == (second == INSERTED)
    ids.discard("p2" * 16)
    assert ids == {"p1" * 16, "p3" * 16}
