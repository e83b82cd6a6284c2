"""Replacing a broadcast's shelf from two places at once (control's ``broadcast.created``
event and ``PUT /api/broadcasts/{id}/shelf``): the replaces are serialised, none fails
(it was a unique-key violation on pk_shop_shelf on PostgreSQL, answered 503), and the
shelf ends as exactly one of the lists asked for."""

from __future__ import annotations

import asyncio
import random

from tests.shop.conftest import known_broadcast, make_product, uid


async def test_concurrent_shelf_replaces_are_serialised(shop) -> None:
    products = [(await make_product(shop.api))["id"] for _ in range(6)]
    rng = random.Random(7)
    for _round in range(3):
        bid = uid()
        await known_broadcast(shop.api, bid)
        lists = [rng.sample(products, k=rng.randint(2, 6)) for _ in range(12)]

        async def by_api(pids: list[int], bid: int = bid) -> int:
            items = [{"product_id": p} for p in pids]
            status, body = await shop.api.call(
                "PUT", f"/api/broadcasts/{bid}/shelf", {"items": items}
            )
            assert status == 200, body
            return status

        async def by_event(pids: list[int], bid: int = bid) -> None:
            await shop.svc.shelf.shelf_from_broadcast(str(bid), pids)

        jobs = [by_api(p) if i % 2 else by_event(p) for i, p in enumerate(lists)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, failed
        shelf = await shop.api.ok("GET", f"/api/broadcasts/{bid}/shelf", token=None)
        got = [item["product"]["id"] for item in shelf["items"]]
        assert got in lists, got
        assert [item["position"] for item in shelf["items"]] == list(range(len(got)))
