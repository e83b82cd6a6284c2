from __future__ import annotations

from tests.shop.conftest import make_product, make_sale, uid


async def test_buy_pay_flow(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sku = product["skus"][0]
    bid = uid()
    sale = await make_sale(api, bid, sku["id"], stock=5, limit=2)
    assert sale["remaining"] == 5
    status, order = await api.post(
        f"/api/flash-sales/{sale['id']}/buy", {"user_id": "u1", "idempotency_key": "k1"}
    )
    assert status == 201, order
    assert order["state"] == "pending_payment"
    assert order["amount_fen"] == 990
    status, again = await api.post(
        f"/api/flash-sales/{sale['id']}/buy", {"user_id": "u1", "idempotency_key": "k1"}
    )
    assert status == 200 and again["id"] == order["id"]
    pay = await api.ok("POST", f"/api/orders/{order['id']}/pay")
    assert pay["amount_fen"] == 990
    # the buyer pays at the simulated provider; it notifies our endpoint over HTTP
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        result = await r.json()
    assert result["notify_status"] == 200
    got = await api.ok("GET", f"/api/orders/{order['id']}")
    assert got["state"] == "paid"
    assert [h["to_state"] for h in got["history"]] == ["pending_payment", "paid"]
