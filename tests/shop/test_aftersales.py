"""After-sales (申请售后): a buyer asks for a refund of their order with their viewer token,
an operator approves (the refund path pays it back) or rejects it, the buyer may withdraw
an open request. Both backends (SQLite + embedded valkey, PostgreSQL + Redis).

Guarantees checked: the transition table (every move it does not list raises) and the
API's 409 on illegal moves; another buyer's order or request answers 404 and changes
nothing; one open request per order, also for two asked at once; the window after
payment; amounts over what is left; approval refunds through the refund path (whole: the
order is refunded and the stock is back; partial: ``refunded_fen`` grows) and the request
ends ``refunded``; the events; the rate limit."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from shop_bridge.aftersales import CLAIM_MS, refund_id_for
from shop_bridge.aftersales_state import (
    TRANSITIONS,
    AfterSalesState,
    IllegalAfterSalesMove,
    transition,
)
from shop_bridge.events import AfterSalesDecided, AfterSalesRequested
from tests.shop.conftest import (
    ShopEnv,
    pay_order,
    place_order,
    provider_down,
    shelved_product,
    sku_stock,
    wait_field,
    wait_for,
)

PRICE = 10_000


async def _request(shop: ShopEnv, rid: str) -> dict[str, Any]:
    """One request as the operators' list shows it (any state)."""
    items = (await shop.api.ok("GET", "/api/aftersales?limit=200"))["items"]
    return next(i for i in items if i["id"] == rid)


async def _wait_request(shop: ShopEnv, rid: str, state: str) -> dict[str, Any]:
    return await wait_for(lambda: _request(shop, rid), "state", state)


async def _product(shop: ShopEnv) -> tuple[int, dict[str, Any]]:
    return await shelved_product(shop.api, "after-sales", PRICE)


_keys = itertools.count()


async def _order(shop: ShopEnv, bid: int, sku: int, user: str, pay: bool = True) -> dict[str, Any]:
    order = await place_order(shop.api, bid, sku, user, f"as{next(_keys)}")
    return await pay_order(shop.api, order, user) if pay else order


async def _ask(
    shop: ShopEnv, order_id: str, user: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    return await shop.api.post(
        f"/api/orders/{order_id}/aftersales",
        body or {"kind": "refund_only", "reason": "no_longer_wanted"},
        token=None,
        viewer=user,
    )


async def _asked(
    shop: ShopEnv, user: str, body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A paid order of ``user`` (one unit of a new product on a new broadcast's shelf) and
    the request they asked of it (answered 201): the product, the order, the request."""
    bid, product = await _product(shop)
    order = await _order(shop, bid, product["skus"][0]["id"], user)
    status, req = await _ask(shop, order["id"], user, body)
    assert status == 201, req
    return product, order, req


def test_the_transition_table_is_the_only_way() -> None:
    allowed = {(a, b) for a, nxt in TRANSITIONS.items() for b in nxt}
    assert allowed == {
        (AfterSalesState.OPEN, AfterSalesState.APPROVED),
        (AfterSalesState.OPEN, AfterSalesState.REJECTED),
        (AfterSalesState.OPEN, AfterSalesState.WITHDRAWN),
        (AfterSalesState.APPROVED, AfterSalesState.REFUNDED),
    }
    for a in AfterSalesState:
        for b in AfterSalesState:
            if (a, b) in allowed:
                assert transition(a, b) is b
            else:
                with pytest.raises(IllegalAfterSalesMove):
                    transition(a, b)


async def test_whole_refund_asked_approved_and_refunded(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory()
    seen: list[Any] = []
    bus = shop.svc.ctx.bus
    unsubs = [bus.on(AfterSalesRequested, seen.append), bus.on(AfterSalesDecided, seen.append)]
    bid, product = await _product(shop)
    order = await _order(shop, bid, product["skus"][0]["id"], "ann")
    assert await sku_stock(shop.api, product["id"]) == 9

    status, req = await _ask(
        shop,
        order["id"],
        "ann",
        {"kind": "refund_only", "reason": "not_as_described", "text": "  colour is off  "},
    )
    assert status == 201, req
    assert req["state"] == "open" and req["amount_fen"] == PRICE  # default: all that is left
    assert (req["user_id"], req["order_id"], req["text"]) == ("ann", order["id"], "colour is off")
    assert req["broadcast_id"] == bid
    mine = await shop.api.ok("GET", "/api/me/aftersales", token=None, viewer="ann")
    assert [r["id"] for r in mine["items"]] == [req["id"]]
    queue = await shop.api.ok("GET", "/api/aftersales?state=open")
    assert req["id"] in [r["id"] for r in queue["items"]]
    mine_only = await shop.api.ok("GET", f"/api/aftersales?state=open&broadcast_id={bid}")
    assert [r["id"] for r in mine_only["items"]] == [req["id"]]

    done = await shop.api.ok("POST", f"/api/aftersales/{req['id']}/approve", {"note": "sorry"})
    assert done["state"] in ("approved", "refunded") and done["approved_fen"] == PRICE
    assert done["refund_id"] and done["decided_by"]
    final = await _wait_request(shop, req["id"], "refunded")
    assert final["note"] == "sorry" and final["closed_at"]
    got = await wait_field(shop.api, f"/api/orders/{order['id']}", "state", "refunded")
    assert got["refunded_fen"] == PRICE
    assert [r["id"] for r in got["refunds"]] == [done["refund_id"]]  # the refund path's row
    assert await sku_stock(shop.api, product["id"]) == 10  # never shipped: the unit is back
    # the buyer sees it refunded
    mine = await shop.api.ok("GET", "/api/me/aftersales", token=None, viewer="ann")
    assert mine["items"][0]["state"] == "refunded"
    assert mine["items"][0]["order"]["refunded_fen"] == PRICE

    async with asyncio.timeout(10):
        while len(seen) < 2:
            await asyncio.sleep(0.02)
    for unsub in unsubs:
        unsub()
    asked = next(e for e in seen if isinstance(e, AfterSalesRequested))
    decided = next(e for e in seen if isinstance(e, AfterSalesDecided))
    assert (asked.request_id, asked.order_id, asked.amount_fen) == (req["id"], order["id"], PRICE)
    assert (decided.request_id, decided.state, decided.amount_fen) == (req["id"], "approved", PRICE)


async def test_partial_return_refund_of_a_shipped_order(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory()
    bid, product = await _product(shop)
    order = await _order(shop, bid, product["skus"][0]["id"], "bea")
    await shop.api.ok("POST", f"/api/orders/{order['id']}/ship")
    status, req = await _ask(
        shop,
        order["id"],
        "bea",
        {"kind": "return_refund", "reason": "damaged", "text": "cracked", "amount_fen": 3000},
    )
    assert status == 201 and req["amount_fen"] == 3000, req
    # the operator amends the amount
    await shop.api.ok("POST", f"/api/aftersales/{req['id']}/approve", {"amount_fen": 2500})
    final = await _wait_request(shop, req["id"], "refunded")
    assert (final["amount_fen"], final["approved_fen"]) == (3000, 2500)
    got = await wait_field(shop.api, f"/api/orders/{order['id']}", "refunded_fen", 2500)
    assert got["state"] == "shipped"  # a partial refund moves no state
    assert await sku_stock(shop.api, product["id"]) == 9  # the goods left the warehouse

    # the request closed, another may be asked: never more than what is left
    status, err = await _ask(
        shop, order["id"], "bea", {"kind": "refund_only", "reason": "other", "amount_fen": 7501}
    )
    assert status == 409 and err["error"]["code"] == "refund_exceeds_paid", err
    assert err["error"]["remaining_fen"] == 7500
    status, again = await _ask(shop, order["id"], "bea")
    assert status == 201 and again["amount_fen"] == 7500, again
    # an approval over what is left is refused by the refund path; the request stays open
    status, err = await shop.api.post(
        f"/api/aftersales/{again['id']}/approve", {"amount_fen": 9000}
    )
    assert status == 409 and err["error"]["code"] == "refund_exceeds_paid", err
    assert (await _request(shop, again["id"]))["state"] == "open"
    assert (await shop.api.ok("GET", f"/api/orders/{order['id']}"))["refunded_fen"] == 2500
    # ... and nothing holds it: it can still be rejected
    await shop.api.ok("POST", f"/api/aftersales/{again['id']}/reject", {"reason": "used"})


async def test_illegal_moves_are_refused(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(aftersales_limit_user=0)
    api = shop.api
    bid, product = await _product(shop)
    sku = product["skus"][0]["id"]
    order = await _order(shop, bid, sku, "cai")

    status, req = await _ask(shop, order["id"], "cai")
    assert status == 201
    status, err = await api.post(f"/api/aftersales/{req['id']}/reject", {"reason": "  "})
    assert status == 400 and err["error"]["field"] == "reason", err  # a reason is required
    status, err = await api.post(f"/api/aftersales/{req['id']}/reject", {})
    assert status == 400, err
    rejected = await api.ok(
        "POST", f"/api/aftersales/{req['id']}/reject", {"reason": "outside policy"}
    )
    assert (rejected["state"], rejected["note"]) == ("rejected", "outside policy")
    for path, body, viewer in (
        ("approve", None, None),
        ("reject", {"reason": "again"}, None),
        ("withdraw", None, "cai"),
    ):
        status, err = await api.call(
            "POST",
            f"/api/aftersales/{req['id']}/{path}",
            body,
            token=None if viewer else "",
            viewer=viewer,
        )
        assert status == 409 and err["error"]["code"] == "illegal_transition", (path, err)
        assert (err["error"]["state"], err["error"]["target"]) == (
            "rejected",
            {"approve": "approved", "reject": "rejected", "withdraw": "withdrawn"}[path],
        )
    assert (await _request(shop, req["id"]))["state"] == "rejected"
    after = await api.ok("GET", f"/api/orders/{order['id']}")
    assert (after["state"], after["refunded_fen"]) == ("paid", 0)

    # withdrawn by the buyer: final too
    status, second = await _ask(shop, order["id"], "cai")
    assert status == 201
    gone = await api.ok(
        "POST", f"/api/aftersales/{second['id']}/withdraw", token=None, viewer="cai"
    )
    assert gone["state"] == "withdrawn" and gone["closed_at"]
    status, err = await api.post(f"/api/aftersales/{second['id']}/approve")
    assert status == 409 and err["error"]["state"] == "withdrawn", err
    assert (await api.ok("GET", f"/api/orders/{order['id']}"))["refunded_fen"] == 0

    # not an order one may ask about: unpaid; a return of goods never shipped; bad fields
    unpaid = await _order(shop, bid, sku, "cai", pay=False)
    status, err = await _ask(shop, unpaid["id"], "cai")
    assert status == 409 and err["error"]["code"] == "order_not_eligible", err
    status, err = await _ask(
        shop, order["id"], "cai", {"kind": "return_refund", "reason": "damaged"}
    )
    assert status == 409 and err["error"]["code"] == "kind_not_allowed", err
    for bad in (
        {"kind": "swap", "reason": "damaged"},
        {"kind": "refund_only", "reason": "bored"},
        {"kind": "refund_only", "reason": "other", "text": "x" * 501},
        {"kind": "refund_only", "reason": "other", "amount_fen": 0},
        {"kind": "refund_only", "reason": "other", "extra": 1},
    ):
        status, err = await _ask(shop, order["id"], "cai", bad)
        assert status == 400, (bad, err)
    assert [r["state"] for r in (await _mine(shop, "cai"))] == ["withdrawn", "rejected"]


async def _mine(shop: ShopEnv, user: str) -> list[dict[str, Any]]:
    got = await shop.api.ok("GET", "/api/me/aftersales", token=None, viewer=user)
    return got["items"]  # type: ignore[no-any-return]


async def test_another_buyers_order_or_request_is_not_found(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory()
    api = shop.api
    bid, product = await _product(shop)
    order = await _order(shop, bid, product["skus"][0]["id"], "dan")

    # someone else's order: 404, nothing stored
    status, err = await _ask(shop, order["id"], "eve")
    assert status == 404 and err["error"]["code"] == "order_not_found", err
    assert await _mine(shop, "eve") == [] and await _mine(shop, "dan") == []
    assert (await api.ok("GET", "/api/aftersales"))["items"] == [] or all(
        r["order_id"] != order["id"] for r in (await api.ok("GET", "/api/aftersales"))["items"]
    )

    status, req = await _ask(shop, order["id"], "dan")
    assert status == 201
    # someone else's request: 404 on withdraw, not in their list, the request unchanged
    status, err = await api.call(
        "POST", f"/api/aftersales/{req['id']}/withdraw", token=None, viewer="eve"
    )
    assert status == 404 and err["error"]["code"] == "aftersales_not_found", err
    assert await _mine(shop, "eve") == []
    assert (await _request(shop, req["id"]))["state"] == "open"
    # a buyer cannot decide, an operator cannot ask, nobody anonymous can do either
    for path in ("approve", "reject"):
        status, err = await api.call(
            "POST", f"/api/aftersales/{req['id']}/{path}", {"reason": "x"}, token=None, viewer="dan"
        )
        assert status in (401, 403), (path, status, err)
    status, err = await api.post(
        f"/api/orders/{order['id']}/aftersales", {"kind": "refund_only", "reason": "other"}
    )
    assert status == 403 and err["error"]["code"] == "buyer_only", err
    status, err = await api.call("GET", "/api/me/aftersales", token=None, viewer="")
    assert status == 401, err
    status, err = await api.call("GET", "/api/aftersales", token=None, viewer="dan")
    assert status in (401, 403), err
    assert (await _request(shop, req["id"]))["state"] == "open"
    assert (await api.ok("GET", f"/api/orders/{order['id']}"))["refunded_fen"] == 0


async def test_one_open_request_per_order_also_when_asked_twice_at_once(
    shop_factory: Any,
) -> None:
    shop: ShopEnv = await shop_factory(aftersales_limit_user=0)
    bid, product = await _product(shop)
    sku = product["skus"][0]["id"]
    order = await _order(shop, bid, sku, "fay")
    results = await asyncio.gather(*(_ask(shop, order["id"], "fay") for _ in range(4)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [201, 409, 409, 409], results
    made = next(body for s, body in results if s == 201)
    for s, body in results:
        if s == 409:
            assert body["error"]["code"] == "request_open", body
            assert body["error"]["request_id"] == made["id"], body
    assert [r["id"] for r in await _mine(shop, "fay")] == [made["id"]]
    # another order of the same buyer is another request
    other = await _order(shop, bid, sku, "fay")
    status, _ = await _ask(shop, other["id"], "fay")
    assert status == 201


async def test_too_late_after_the_window(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(aftersales_window_days=3)
    bid, product = await _product(shop)
    order = await _order(shop, bid, product["skus"][0]["id"], "gus")
    ctx = shop.svc.ctx
    real = ctx.clock
    ctx.set_clock(lambda: real() + 3 * 86400 - 60)  # a minute before the end: still fine
    try:
        status, req = await _ask(shop, order["id"], "gus")
        assert status == 201, req
        await shop.api.ok("POST", f"/api/aftersales/{req['id']}/withdraw", token=None, viewer="gus")
        ctx.set_clock(lambda: real() + 3 * 86400 + 60)
        status, err = await _ask(shop, order["id"], "gus")
        assert status == 409 and err["error"]["code"] == "too_late", err
        assert err["error"]["deadline"]
    finally:
        ctx.set_clock(real)
    assert [r["state"] for r in await _mine(shop, "gus")] == ["withdrawn"]


async def test_asking_is_rate_limited(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(aftersales_limit_user=2, rate_window=60)
    _, order, req = await _asked(shop, "hal")
    status, _ = await shop.api.call(
        "POST", f"/api/aftersales/{req['id']}/withdraw", token=None, viewer="hal"
    )
    assert status == 200
    status, err = await _ask(shop, order["id"], "hal")
    assert status == 429 and err["error"]["code"] == "rate_limited", err
    retry = err["error"]["retry_after"]
    assert err["error"]["message"] == (
        f"too many after-sales request attempts from this account; retry in {retry} s"
    )  # the guard names the action: no "buy" in it
    await shop.api.ok("POST", "/api/shop/blocklist", {"kind": "user", "value": "hal"}, 201)
    status, err = await _ask(shop, order["id"], "hal")
    assert status == 403 and err["error"]["code"] == "blocked", err
    assert err["error"]["message"] == "after-sales request refused: this account is blocked"
    assert [r["state"] for r in await _mine(shop, "hal")] == ["withdrawn"]


async def test_approved_while_the_provider_is_down_then_refunded_by_its_event(
    shop_factory: Any,
) -> None:
    """The refund an approval asks for is not confirmed at once (the provider is down): the
    request stays ``approved``; when the refund path's retry gets it through, its
    ``refund.completed`` ends the request ``refunded``."""
    shop: ShopEnv = await shop_factory()
    _, order, req = await _asked(
        shop, "ivy", {"kind": "refund_only", "reason": "other", "amount_fen": 1000}
    )
    async with provider_down(shop):
        approved = await shop.api.ok("POST", f"/api/aftersales/{req['id']}/approve")
        assert approved["state"] == "approved" and approved["refund_id"], approved
        got = await shop.api.ok("GET", f"/api/orders/{order['id']}")
        assert got["refunded_fen"] == 0
        assert [r["state"] for r in got["refunds"]] == ["pending"]
        # the buyer sees it approved (refunding)
        assert (await _mine(shop, "ivy"))[0]["state"] == "approved"
    assert await shop.svc.refunds.retry_pending() == 1
    final = await _wait_request(shop, req["id"], "refunded")
    assert final["approved_fen"] == 1000
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}")
    assert (got["state"], got["refunded_fen"]) == ("paid", 1000)


async def _crashed_approval(
    shop: ShopEnv, req: dict[str, Any], amount_fen: int | None
) -> dict[str, Any]:
    """What a node that stopped mid-approval leaves behind: its claim on the request and
    the refund it asked of the refund path, but no approval recorded (the pieces of
    :meth:`AfterSales.approve` in their order, up to the crash point)."""
    svc = shop.svc
    current = await svc.aftersales.get(req["id"])
    await svc.aftersales._claim(current, "crashed-node", svc.ctx.now_ms())
    done: dict[str, Any] = await svc.refunds.refund(
        req["order_id"], "op", "after-sales", amount_fen, refund_id=refund_id_for(req["id"])
    )
    assert (await _request(shop, req["id"]))["state"] == "open"  # not recorded
    return done


async def _after_the_claim_lapses(shop: ShopEnv, rid: str, body: dict[str, Any]) -> Any:
    """Approve ``rid`` once the crashed node's claim has lapsed (the clock moved on)."""
    ctx = shop.svc.ctx
    real = ctx.clock
    ctx.set_clock(lambda: real() + CLAIM_MS / 1000 + 1)
    try:
        return await shop.api.ok("POST", f"/api/aftersales/{rid}/approve", body)
    finally:
        ctx.set_clock(real)


async def test_an_approval_repeated_after_a_crash_refunds_once(shop_factory: Any) -> None:
    """A node made the approval's partial refund (the provider confirmed it) and stopped
    before recording the approval; once its claim lapses, another approval (with another
    amount, even) finds that refund: one refund row, one refund at the provider, one call,
    and the request ends ``refunded`` with the amount that was refunded."""
    shop: ShopEnv = await shop_factory()
    _, order, req = await _asked(
        shop, "jay", {"kind": "refund_only", "reason": "other", "amount_fen": 4000}
    )
    made = await _crashed_approval(shop, req, 4000)
    assert made["refund"]["id"] == refund_id_for(req["id"])
    assert shop.sim.refund_calls[order["id"]] == 1

    # while the crashed node's claim holds, nobody else may decide
    status, err = await shop.api.post(f"/api/aftersales/{req['id']}/approve")
    assert status == 409 and err["error"]["code"] == "request_busy", err

    approved = await _after_the_claim_lapses(shop, req["id"], {"amount_fen": 5000})
    assert approved["refund_id"] == refund_id_for(req["id"])
    assert approved["approved_fen"] == 4000  # what was refunded, not the amended amount
    final = await _wait_request(shop, req["id"], "refunded")
    assert final["refund_id"] == refund_id_for(req["id"])
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}")
    assert [(r["id"], r["amount_fen"]) for r in got["refunds"]] == [
        (refund_id_for(req["id"]), 4000)
    ]
    assert (got["state"], got["refunded_fen"]) == ("paid", 4000)
    assert shop.sim.refunds[order["id"]] == {refund_id_for(req["id"]): 4000}
    assert shop.sim.refund_calls[order["id"]] == 1
    # a third approval is an illegal move and refunds nothing
    status, err = await shop.api.post(f"/api/aftersales/{req['id']}/approve")
    assert status == 409 and err["error"]["code"] == "illegal_transition", err
    assert shop.sim.refund_calls[order["id"]] == 1


async def test_a_whole_refund_pending_at_the_crash_is_carried_on_by_the_next_approval(
    shop_factory: Any,
) -> None:
    """The crashed node's whole refund never reached the provider (it was down): the order
    is ``refunding`` with one pending refund. The next approval asks the provider for that
    refund (once), makes no other, and the request ends ``refunded`` with the unit back."""
    shop: ShopEnv = await shop_factory()
    product, order, req = await _asked(shop, "kim")
    async with provider_down(shop) as sim:
        await _crashed_approval(shop, req, None)
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}")
    assert got["state"] == "refunding"
    assert [r["state"] for r in got["refunds"]] == ["pending"]
    assert sim.refund_calls.get(order["id"], 0) == 0

    approved = await _after_the_claim_lapses(shop, req["id"], {})
    assert approved["refund_id"] == refund_id_for(req["id"])
    assert approved["approved_fen"] == PRICE
    await _wait_request(shop, req["id"], "refunded")
    got = await wait_field(shop.api, f"/api/orders/{order['id']}", "state", "refunded")
    assert got["refunded_fen"] == PRICE
    assert [(r["id"], r["state"]) for r in got["refunds"]] == [(refund_id_for(req["id"]), "done")]
    assert sim.refund_calls[order["id"]] == 1
    assert sum(sim.refunds[order["id"]].values()) == PRICE
    assert await sku_stock(shop.api, product["id"]) == 10
