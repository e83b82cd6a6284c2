"""Offline voucher prizes (issue 20, lottery prize types): the winner gets a redemption code
among their prizes, only they (and operators) can read it, an operator redeems it exactly
once (two at once: one wins, the other is told when and by whom), and the code never
travels on the bus."""

from __future__ import annotations

import asyncio

from tests.shop.conftest import make_product, uid


def voucher_prize(lottery: str, user: str, n: int = 0) -> dict:
    return {
        "lottery_id": lottery,
        "room": "live/v",
        "user_id": user,
        "nick": "winner",
        "prize": {"name": "Tea tasting for two", "stock": 1, "kind": "voucher"},
        "prize_index": 0,
        "n": n,
        "mode": "timed",
    }


async def test_a_voucher_is_redeemed_once(shop) -> None:
    events: list[dict] = []
    shop.server.runtime.bus.subscribe("prize.granted", lambda e: events.append(e.data))
    lottery, winner = f"lot{uid()}", f"w{uid()}"
    granted = await shop.api.ok("POST", "/api/lottery/prizes", voucher_prize(lottery, winner), 201)
    assert granted["kind"] == "voucher" and len(granted["code"]) == 12
    code = granted["code"]

    mine = await shop.api.ok("GET", f"/api/users/{winner}/prizes", token=None, viewer=winner)
    assert [p["code"] for p in mine["items"]] == [code]
    status, _ = await shop.api.call(
        "GET", f"/api/users/{winner}/prizes", token=None, viewer="someone-else"
    )
    assert status == 403
    status, _ = await shop.api.call("GET", f"/api/users/{winner}/prizes", token=None)
    assert status == 401

    # a viewer cannot redeem; two operators at once: exactly one succeeds
    status, _ = await shop.api.call(
        "POST", "/api/vouchers/redeem", {"code": code}, token=None, viewer=winner
    )
    assert status in (401, 403)
    spaced = f"{code[:4]}-{code[4:8]} {code[8:].lower()}"  # as typed at the counter
    results = await asyncio.gather(
        shop.api.call("POST", "/api/vouchers/redeem", {"code": code}),
        shop.api.call("POST", "/api/vouchers/redeem", {"code": spaced}),
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [200, 409], results
    refused = next(b for s, b in results if s == 409)
    assert refused["error"]["code"] == "already_redeemed"
    assert refused["error"]["redeemed_ms"] > 0 and refused["error"]["redeemed_by"]
    status, body = await shop.api.call("POST", "/api/vouchers/redeem", {"code": "ZZZZZZZZZZZZ"})
    assert status == 404, body
    status, body = await shop.api.call("POST", "/api/vouchers/redeem", {"code": "not a code!"})
    assert status == 400, body

    # the same prize again (a redelivery) grants nothing new; the code stays the winner's
    again = await shop.api.ok("POST", "/api/lottery/prizes", voucher_prize(lottery, winner))
    assert again["duplicate"] is True and again["code"] == code
    assert events and all("code" not in e for e in events)
    assert code not in repr(events)


async def test_a_product_prize_ships_to_the_winners_default_address(shop) -> None:
    product = await make_product(shop.api, stock=5)
    winner = f"w{uid()}"
    home = {"name": "张三", "phone": "13812345678", "address": "广东省深圳市南山区科苑路15号"}
    await shop.api.ok("POST", "/api/me/addresses", home, 201, token=None, viewer=winner)
    prize = {
        **voucher_prize(f"lot{uid()}", winner),
        "prize": {"name": "Scarf", "stock": 1, "kind": "product", "sku": product["skus"][0]["id"]},
    }
    granted = await shop.api.ok("POST", "/api/lottery/prizes", prize, 201)
    assert granted["kind"] == "product" and granted["order_id"]
    order = await shop.api.ok(
        "GET", f"/api/orders/{granted['order_id']}", token=None, viewer=winner
    )
    assert order["state"] == "paid" and order["amount_fen"] == 0
    assert order["recipient"]["phone"] == "138****5678", order["recipient"]
    full = await shop.api.ok("GET", f"/api/orders/{granted['order_id']}/recipient")
    assert full == {"order_id": granted["order_id"], "recipient": home}
