"""Sharers (分享员): who may make share links, first/last-touch attribution within the
window, what credits nobody, sales per sharer with the shop's one GMV definition; SQLite
and PostgreSQL, real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shop_bridge.sharers import ShareToken, TokenRefused, sign_share, verify_share
from tests.shop.conftest import FakeClock, ShopEnv, make_product, make_sale, on_shelf, uid
from tests.shop.order_core_ports import server_factory  # noqa: F401


async def _setup(shop: ShopEnv, anchor: bool = True) -> tuple[int, int]:
    """A control broadcast (of the test's anchor) with a product on its shelf, known to
    the shop: (broadcast, sku)."""
    api = shop.api
    assert api.tokens is not None
    product = await make_product(api)
    body: dict[str, Any] = {
        "title": "share",
        "scheduled_start": "2030-01-01T12:00:00Z",
        "product_ids": [product["id"]],
    }
    if anchor:
        body["anchor_id"] = int(api.tokens["anchor_id"])
    bid = int((await api.ok("POST", "/api/broadcasts", body, 201))["id"])
    async with asyncio.timeout(10):  # the shop learns of it from control's event
        while not (await api.ok("GET", f"/api/broadcasts/{bid}/shelf"))["items"]:
            await asyncio.sleep(0.02)
    sku = product["skus"][0]["id"]
    await on_shelf(api, bid, sku)
    return bid, sku


async def _sharer(shop: ShopEnv, name: str = "Ann") -> str:
    sid = uid("sh")
    await shop.api.ok("POST", "/api/sharers", {"user_id": sid, "name": name}, 201)
    return sid


async def _link(shop: ShopEnv, bid: int, sid: str) -> str:
    link = await shop.api.ok("POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": sid}, 201)
    return link["token"]  # type: ignore[no-any-return]


async def _order(
    shop: ShopEnv, bid: int, sku: int, buyer: str, share: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": buyer,
        "sku_id": sku,
        "quantity": 1,
        "broadcast_id": bid,
        "idempotency_key": uid("k"),
    }
    if share is not None:
        body["share"] = share
    return await shop.api.ok("POST", "/api/orders", body, 201, token=None)  # type: ignore[no-any-return]


async def test_who_may_make_share_links(shop: ShopEnv) -> None:
    api = shop.api
    assert api.tokens is not None
    bid, _sku = await _setup(shop)
    ann = await _sharer(shop)
    link = await api.ok("POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": ann}, 201)
    assert link["broadcast_id"] == bid and link["sharer_id"] == ann
    assert link["url"].startswith(shop.server.http_url + "/watch/")
    assert link["url"].endswith("?share=" + link["token"])
    # the broadcast's anchor, for a registered sharer
    anchor = api.tokens["anchor"]
    await api.ok(
        "POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": ann}, 201, token=anchor
    )
    # ... but not on someone else's broadcast
    other, _other_sku = await _setup(shop, anchor=False)
    status, _ = await api.call(
        "POST", f"/api/broadcasts/{other}/share-links", {"sharer_id": ann}, token=anchor
    )
    assert status == 404
    # a registered sharer for themselves (viewer token), not for someone else
    mine = await api.ok(
        "POST", f"/api/broadcasts/{bid}/share-links", None, 201, token=None, viewer=ann
    )
    assert mine["sharer_id"] == ann
    status, err = await api.call(
        "POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": "x1"}, token=None, viewer=ann
    )
    assert status == 403, err
    # a viewer who is not a sharer; a sharer nobody registered; no broadcast; nobody
    status, err = await api.call(
        "POST", f"/api/broadcasts/{bid}/share-links", None, token=None, viewer=uid("v")
    )
    assert (status, err["error"]["code"]) == (403, "not_a_sharer")
    status, err = await api.call(
        "POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": uid("nobody")}
    )
    assert (status, err["error"]["code"]) == (422, "unknown_sharer")
    status, _ = await api.call("POST", f"/api/broadcasts/{uid()}/share-links", {"sharer_id": ann})
    assert status == 404
    assert (await api.call("POST", f"/api/broadcasts/{bid}/share-links", None, token=None))[
        0
    ] == 401
    # sales per sharer: staff of that broadcast only
    assert (await api.call("GET", f"/api/broadcasts/{other}/sharers", token=anchor))[0] == 404
    assert (await api.call("GET", f"/api/broadcasts/{bid}/sharers", token=None))[0] == 401


async def test_last_touch_credits_the_latest_link_and_sales_follow_the_gmv_rule(
    shop: ShopEnv,
) -> None:
    api = shop.api
    bid, sku = await _setup(shop)
    ann, bob = await _sharer(shop, "Ann"), await _sharer(shop, "Bob")
    a, b = await _link(shop, bid, ann), await _link(shop, bid, bob)
    buyer = uid("u")
    visit = await api.ok(
        "POST", f"/api/broadcasts/{bid}/share-visits", {"share": a}, token=None, viewer=buyer
    )
    assert visit["credited_to"] == ann
    o1 = await _order(shop, bid, sku, buyer, share=b)  # last touch: Bob
    assert o1["sharer_id"] == bob
    o2 = await _order(shop, bid, sku, uid("u"), share=a)
    assert o2["sharer_id"] == ann
    # no token, a forged one, one of another broadcast, one's own link: nobody, still sold
    assert (await _order(shop, bid, sku, uid("u")))["sharer_id"] is None
    forged = a[:-3] + ("AAA" if not a.endswith("AAA") else "BBB")
    assert (await _order(shop, bid, sku, uid("u"), share=forged))["sharer_id"] is None
    bid2, sku2 = await _setup(shop)
    assert (await _order(shop, bid2, sku2, uid("u"), share=a))["sharer_id"] is None
    assert (await _order(shop, bid, sku, ann, share=a))["sharer_id"] is None
    # a flash-sale buy with the header
    sale = await make_sale(api, bid, sku, stock=5, limit=1)
    status, flash = await api.call(
        "POST",
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": (fb := uid("u")), "idempotency_key": "f1"},
        token=None,
        viewer=fb,
        headers={"X-Share-Token": b},
    )
    assert status == 201 and flash["sharer_id"] == bob, flash
    # pay o1, o2 and the flash order; refund o2: Ann's GMV goes back to 0
    for order in (o1, o2, flash):
        pay = await api.ok("POST", f"/api/orders/{order['id']}/pay")
        async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
            assert (await r.json())["notify_status"] == 200
    await api.ok("POST", f"/api/orders/{o2['id']}/refund")
    report = await api.ok("GET", f"/api/broadcasts/{bid}/sharers")
    by = {i["sharer_id"]: i for i in report["items"]}
    assert report["attribution"] == "last"
    assert by[bob]["orders"] == 2 and by[bob]["buyers"] == 2 and by[bob]["name"] == "Bob"
    assert by[bob]["gmv_fen"] == o1["amount_fen"] + flash["amount_fen"]
    assert by[ann]["orders"] == 0 and by[ann]["gmv_fen"] == 0
    assert by[ann]["refunded_fen"] == o2["amount_fen"]
    # the same figures as the broadcast's sales for these orders
    sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
    assert sales["gmv_fen"] == by[bob]["gmv_fen"] + by[ann]["gmv_fen"]
    # the anchor of the broadcast reads it too
    assert api.tokens is not None
    await api.ok("GET", f"/api/broadcasts/{bid}/sharers", token=api.tokens["anchor"])
    # a deactivated sharer's links credit nobody from then on
    await api.ok("DELETE", f"/api/sharers/{bob}")
    assert (await _order(shop, bid, sku, uid("u"), share=b))["sharer_id"] is None
    listed = await api.ok("GET", "/api/sharers")
    assert {s["user_id"]: s["active"] for s in listed["items"]}[bob] is False


async def test_first_touch_within_the_window(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(sharer_attribution="first", sharer_window=600)
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    bid, sku = await _setup(shop)
    ann, bob = await _sharer(shop), await _sharer(shop)
    a, b = await _link(shop, bid, ann), await _link(shop, bid, bob)
    buyer = uid("u")
    status, visit = await shop.api.call(
        "POST",
        f"/api/broadcasts/{bid}/share-visits",
        None,
        token=None,
        viewer=buyer,
        headers={"X-Share-Token": a},
    )
    assert (status, visit["credited_to"]) == (200, ann)
    clock.advance(300)
    assert (await _order(shop, bid, sku, buyer, share=b))["sharer_id"] == ann  # first: Ann
    clock.advance(301)  # Ann's touch is now 601 s old: outside the window
    assert (await _order(shop, bid, sku, buyer, share=b))["sharer_id"] == bob
    # a link past its validity credits nobody
    clock.advance(shop.svc.ctx.config.share_link_ttl + 1)
    assert (await _order(shop, bid, sku, uid("u"), share=a))["sharer_id"] is None


@given(st.text(max_size=600) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_share_token_garbage_is_refused(raw: str) -> None:
    try:
        verify_share(b"k" * 32, raw, 0)
    except TokenRefused:
        return
    raise AssertionError(f"accepted {raw!r}")


def test_share_token_round_trip_and_expiry() -> None:
    key = b"k" * 32
    now = int(time.time() * 1000)
    token = sign_share(key, ShareToken("ann", "12", now + 1000))
    assert verify_share(key, token, now) == ShareToken("ann", "12", now + 1000)
    for bad_key, at in ((b"x" * 32, now), (key, now + 1001)):
        try:
            verify_share(bad_key, token, at)
        except TokenRefused:
            continue
        raise AssertionError("accepted")


async def test_share_visits_count_once_per_viewer_and_browser(shop: ShopEnv) -> None:
    """A visit through a share link counts for its sharer without a viewer token (by the
    browser's X-Device-Id), once per browser and viewer; orders are credited only once the
    buyer has a token; visits from one address are bounded."""
    from shop_bridge.sharers import VISITS_PER_ADDRESS

    api = shop.api
    bid, sku = await _setup(shop)
    ann, bob = await _sharer(shop, "Ann"), await _sharer(shop, "Bob")
    a = await _link(shop, bid, ann)
    path = f"/api/broadcasts/{bid}/share-visits"

    async def visit(device: str | None, viewer: str | None = None, share: str = a) -> Any:
        headers = {"X-Device-Id": device} if device else {}
        status, body = await api.call(
            "POST", path, {"share": share}, token=None, viewer=viewer, headers=headers
        )
        assert status == 200, body
        return body

    first = await visit("browser-one-0001")
    assert (first["counted"], first["credited_to"]) == (True, None)
    again = await visit("browser-one-0001")
    assert (again["counted"], again["not_counted"]) == (False, "seen")
    # the same browser once it has a viewer token: no new visit, but now a touch
    buyer = uid("u")
    signed = await visit("browser-one-0001", viewer=buyer)
    assert (signed["counted"], signed["credited_to"]) == (False, ann)
    assert (await _order(shop, bid, sku, buyer))["sharer_id"] is None  # no link on the buy
    assert (await _order(shop, bid, sku, buyer, share=a))["sharer_id"] == ann
    # that viewer on another browser is the same viewer
    assert (await visit("browser-two-0002", viewer=buyer))["counted"] is False
    assert (await visit("browser-two-0002"))["counted"] is False
    assert (await visit("browser-three-03"))["counted"] is True
    # a forged link, another broadcast's, the sharer's own: counted for nobody
    forged = a[:-3] + ("AAA" if not a.endswith("AAA") else "BBB")
    assert (await visit("browser-four-004", share=forged))["not_counted"] == "refused"
    assert (await visit(None, viewer=ann))["not_counted"] == "refused"
    # nothing to count by: refused
    status, err = await api.call("POST", path, {"share": a}, token=None)
    assert status == 401, err

    report = await api.ok("GET", f"/api/broadcasts/{bid}/sharers")
    by = {i["sharer_id"]: i for i in report["items"]}
    assert by[ann]["visits"] == 2  # (its order is credited, not paid: no sale yet)
    assert bob not in by  # no visit, no sale

    # one address (all of this test's requests) counts a bounded number of new browsers
    b = await _link(shop, bid, bob)
    counted = [
        (await visit(f"flood-{n:06d}", share=b))["counted"] for n in range(VISITS_PER_ADDRESS + 5)
    ]
    # the address already brought 2 new visitors to this broadcast (Ann's)
    assert counted.count(True) == VISITS_PER_ADDRESS - 2
    assert (await visit("flood-last-0001", share=b))["not_counted"] == "address_limit"
    report = await api.ok("GET", f"/api/broadcasts/{bid}/sharers")
    by = {i["sharer_id"]: i for i in report["items"]}
    assert (by[bob]["visits"], by[bob]["orders"], by[bob]["name"]) == (
        VISITS_PER_ADDRESS - 2,
        0,
        "Bob",
    )
