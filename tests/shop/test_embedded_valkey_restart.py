"""End to end: the embedded valkey-server dies mid flash sale (SIGKILL, as the OOM killer
does); berrylive starts it again by itself (core/redis.py), the shop sees the new run id
on its next buy-path connection and rebuilds the sale from the orders, and buys work
again: no oversell, limits kept, a retried key answers with its order."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil
import pytest

from tests.shop.conftest import (
    buy_retrying,
    journal_drained,
    kill_embedded_valkey,
    make_product,
    make_sale,
    uid,
)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_buys_work_again_after_the_embedded_valkey_was_killed(shop_factory: Any) -> None:
    shop = await shop_factory(redis_check_interval=3600.0)  # the reconnect's check alone
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=4, limit=1)
    sid = sale["id"]
    status, first = await buy_retrying(shop, sid, "u0", "a")
    assert status == 201
    await journal_drained(svc, sid)
    rebuilds = svc.epoch.rebuilds

    pid = await kill_embedded_valkey(shop)  # berrylive restarts it, nobody else
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    status, body = await buy_retrying(shop, sid, "u1", "b")
    assert status == 201, body
    assert svc.epoch.rebuilds > rebuilds  # the new run id was seen: rebuilt from the orders
    status, body = await buy_retrying(shop, sid, "u0", "again")
    assert (status, body["error"]["code"]) == (409, "limit_reached"), body
    status, again = await buy_retrying(shop, sid, "u0", "a")
    assert (status, again["id"]) == (200, first["id"])
    results = await asyncio.gather(*(buy_retrying(shop, sid, f"n{i}", "k") for i in range(4)))
    assert sorted(s for s, _ in results) == [201, 201, 409, 409]
    assert {b["error"]["code"] for s, b in results if s == 409} == {"sold_out"}
    await journal_drained(svc, sid)
    audit = await shop.api.ok("GET", f"/api/flash-sales/{sid}/audit")
    assert audit["consistent"] and audit["users_over_limit"] == [], audit
    async with shop.api.session.get(shop.server.http_url + "/healthz") as r:
        health = await r.json()
    assert r.status == 200 and health["redis"] is True, health
