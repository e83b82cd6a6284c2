"""Offline voucher prizes (issue 20, lottery prize types): the winner gets a redemption code
among their prizes, only they (and operators) can read it, an operator redeems it exactly
once (two at once: one wins, the other is told when and by whom), and the code never
travels on the bus."""

from __future__ import annotations

import asyncio

from tests.shop.conftest import uid


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
    granted = await shop.api.ok(
        "POST", "/api/lottery/prizes", voucher_prize(lottery, winner), 201
    )
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
