"""A shop with no payment provider configured (issue 17, item 12): the simulator does not
run unless switched on, no unauthenticated pay URL reaches a buyer, starting a payment is a
clear 503, and unpaid orders still time out and give their stock back."""

from __future__ import annotations

from typing import Any

from shop_bridge import PAY_SIMULATOR
from tests.shop.conftest import FakeClock, ShopEnv, make_product, make_sale, uid


async def _sale_and_order(shop: ShopEnv, user: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flash sale of 2 units and ``user``'s order of one: (sale, order)."""
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=2)
    order = await shop.api.ok(
        "POST",
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": user, "idempotency_key": "k1", "quantity": 1},
        201,
        token=None,
    )
    return sale, order


async def test_no_provider_no_simulator(shop_factory) -> None:
    shop = await shop_factory(pay_simulator=False)
    assert PAY_SIMULATOR not in shop.server.app
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    sale, order = await _sale_and_order(shop, "dora")
    status, body = await shop.api.call(
        "POST", f"/api/orders/{order['id']}/pay", token=None, viewer="dora"
    )
    assert status == 503, body
    assert body["error"]["code"] == "payments_not_configured"
    assert "/sim/pay" not in str(body)
    # the order waits for its timeout, then the closed-at-no-provider payment cancels it
    clock.advance(shop.svc.ctx.config.payment_timeout + 1)
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 1
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="dora")
    assert got["state"] == "cancelled"
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 2


async def test_simulator_only_when_switched_on(shop_factory) -> None:
    shop = await shop_factory(pay_simulator=True)
    assert PAY_SIMULATOR in shop.server.app
    _, order = await _sale_and_order(shop, "eve")
    pay = await shop.api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer="eve")
    assert pay["payment"]["sim_pay_url"].startswith(shop.sim.url + "/sim/pay/")


async def test_the_simulators_pay_url_names_the_public_host() -> None:
    """A demo reached over the LAN hands out pay URLs a phone can open (the server's
    public host), while the shop calls the simulator over loopback."""
    from shop_bridge.simulator import SimulatedProvider

    sim = SimulatedProvider(b"k" * 32)
    url = await sim.start("0.0.0.0", 0, public_host="192.0.2.7")
    try:
        assert url.startswith("http://127.0.0.1:")
        port = url.rsplit(":", 1)[1]
        assert sim.public_url == f"http://192.0.2.7:{port}"
    finally:
        await sim.stop()
