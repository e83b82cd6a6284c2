"""The operators' prize listing (``GET /api/lottery/prizes``): every prize with its name,
lottery, winner and what to do next (``state``), following its order or coupon or voucher,
filtered by lottery, winner and state; operators only."""

from __future__ import annotations

from tests.shop.conftest import make_product, uid


def prize(lottery: str, user: str, n: int, body: dict) -> dict:
    return {
        "lottery_id": lottery,
        "room": "live/p",
        "user_id": user,
        "nick": "winner",
        "prize": body,
        "prize_index": 0,
        "n": n,
        "mode": "timed",
    }


async def test_operators_list_prizes_with_name_winner_and_state(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=5)
    sku = product["skus"][0]["id"]
    lottery, other = f"lot{uid()}", f"lot{uid()}"
    shipped_to, owed_to, coupon_to, manual_to = (f"w{uid()}" for _ in range(4))
    home = {"name": "张三", "phone": "13812345678", "address": "广东省深圳市南山区科苑路15号"}
    await api.ok("POST", "/api/me/addresses", home, 201, token=None, viewer=shipped_to)

    scarf = await api.ok(
        "POST",
        "/api/lottery/prizes",
        prize(lottery, shipped_to, 0, {"name": "Red scarf", "stock": 1, "sku": sku}),
        201,
    )
    # a product prize without a name (as grants from before names were kept): its product's
    unnamed = await api.ok(
        "POST", "/api/lottery/prizes", prize(lottery, owed_to, 1, {"stock": 1, "sku": sku}), 201
    )
    await api.ok(
        "POST",
        "/api/lottery/prizes",
        prize(lottery, coupon_to, 2, {"name": "¥5 off", "stock": 1, "value_fen": 500}),
        201,
    )
    await api.ok(
        "POST",
        "/api/lottery/prizes",
        prize(other, manual_to, 0, {"name": "Signed photo", "stock": 1}),
        201,
    )
    await api.ok("POST", f"/api/orders/{scarf['order_id']}/ship")

    listed = await api.ok("GET", f"/api/lottery/prizes?lottery_id={lottery}")
    by_user = {p["user_id"]: p for p in listed["items"]}
    assert set(by_user) == {shipped_to, owed_to, coupon_to}
    assert all(p["lottery_id"] == lottery for p in listed["items"])
    s = by_user[shipped_to]
    assert (s["name"], s["kind"], s["state"], s["order_id"], s["order_state"]) == (
        "Red scarf",
        "product",
        "shipped",
        scarf["order_id"],
        "shipped",
    )
    u = by_user[owed_to]
    assert (u["name"], u["state"], u["order_id"]) == (
        product["title"],
        "to_ship",
        unnamed["order_id"],
    )
    c = by_user[coupon_to]
    assert (c["name"], c["kind"], c["state"]) == ("¥5 off", "coupon", "granted")
    assert c["coupon_id"] and "code" in c

    everything = await api.ok("GET", "/api/lottery/prizes?limit=200")
    mine = [p for p in everything["items"] if p["lottery_id"] in (lottery, other)]
    assert len(mine) == 4
    assert [p["created_ms"] for p in everything["items"]] == sorted(
        (p["created_ms"] for p in everything["items"]), reverse=True
    )
    manual = next(p for p in mine if p["user_id"] == manual_to)
    assert (manual["name"], manual["kind"], manual["state"]) == ("Signed photo", "manual", "owed")

    to_ship = await api.ok("GET", f"/api/lottery/prizes?lottery_id={lottery}&state=to_ship")
    assert [p["user_id"] for p in to_ship["items"]] == [owed_to]
    one = await api.ok("GET", f"/api/lottery/prizes?user_id={manual_to}")
    assert [p["name"] for p in one["items"]] == ["Signed photo"]
    # the winner's own list names them too
    theirs = await api.ok("GET", f"/api/users/{coupon_to}/prizes", token=None, viewer=coupon_to)
    assert [p["name"] for p in theirs["items"]] == ["¥5 off"]

    for bad in ("state=won", "limit=0", "lottery_id=a%20b"):
        status, body = await api.call("GET", f"/api/lottery/prizes?{bad}")
        assert status == 400, (bad, body)
    status, _ = await api.call("GET", "/api/lottery/prizes", token=None, viewer=coupon_to)
    assert status in (401, 403)
