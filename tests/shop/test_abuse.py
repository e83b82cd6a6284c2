"""Abuse control: per account / device / IP rate limits with 429 + Retry-After, the
blocklist (operator API) shared through Redis and rebuilt from the database, the lottery's
use of the same guard, the flash-sale account-age rule; SQLite and PostgreSQL, real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.abuse import AbuseGuard, Limits, Refused, normalise_entry
from core.tokens import issue_token
from tests.conftest import TEST_SECRET
from tests.shop.conftest import FakeClock, ShopEnv, make_product, make_sale, uid
from tests.shop.order_core_ports import server_factory  # noqa: F401


async def _raw(
    shop: ShopEnv, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any, Any]:
    async with shop.api.session.post(shop.api.base + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None), r.headers


def _viewer(user: str, **kw: Any) -> dict[str, str]:
    return {"X-Viewer-Token": issue_token(TEST_SECRET, user, user, **kw)}


async def test_rate_limits_per_account_device_and_ip(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(
        buy_limit_user=3, buy_limit_device=4, buy_limit_ip=7, rate_window=60
    )
    product = await make_product(shop.api)
    sku = product["skus"][0]["id"]

    def order(n: int) -> dict[str, Any]:
        return {"sku_id": sku, "quantity": 1, "idempotency_key": f"k{n}"}

    # per account: the 4th attempt of one buyer within the window
    ann = uid("ann")
    for n in range(3):
        status, _b, _h = await _raw(shop, "/api/orders", order(n), _viewer(ann))
        assert status == 201
    status, err, headers = await _raw(shop, "/api/orders", order(9), _viewer(ann))
    assert status == 429, err
    assert err["error"]["code"] == "rate_limited" and err["error"]["scope"] == "user"
    retry = int(headers["Retry-After"])
    assert 1 <= retry <= 60 and err["error"]["retry_after"] == retry
    # per device: other accounts on the same device (4 attempts allowed, Ann's were
    # without a device id)
    dev = {"X-Device-Id": "phone-1"}
    codes = []
    for n in range(5):
        status, err, _h = await _raw(shop, "/api/orders", order(n), {**_viewer(uid("d")), **dev})
        codes.append(status if status != 429 else err["error"]["scope"])
    assert codes == [201, 201, 201, 201, "device"]
    # per IP: all of this came from 127.0.0.1: 3 + 4 counted (an attempt refused for the
    # account or the device is not counted for the IP), the next one is the 8th
    status, err, _h = await _raw(shop, "/api/orders", order(0), _viewer(uid("i")))
    assert (status, err["error"]["scope"]) == (429, "ip")
    # an operator's backend placing orders for its users is not limited per IP
    body = {**order(0), "user_id": uid("b")}
    status, _b, _h = await _raw(
        shop, "/api/orders", body, {"Authorization": f"Bearer {shop.api.token}"}
    )
    assert status == 201
    # a bad device id is a 400, not a limit dodge
    status, err, _h = await _raw(
        shop, "/api/orders", order(0), {**_viewer(uid("x")), "X-Device-Id": "a b"}
    )
    assert status == 400


async def test_blocklist_is_shared_rebuilt_and_expires(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory()
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=50, limit=5, length=86400)
    url = f"/api/flash-sales/{sale['id']}/buy"
    mallory = uid("m")
    entry = await api.ok(
        "POST", "/api/shop/blocklist", {"kind": "user", "value": mallory, "reason": "bots"}, 201
    )
    assert entry["kind"] == "user" and entry["expires_at"] is None
    status, err, _h = await _raw(shop, url, {"idempotency_key": "a"}, _viewer(mallory))
    assert (status, err["error"]["code"], err["error"]["scope"]) == (403, "blocked", "user")
    assert err["error"]["message"] == "buy refused: this account is blocked"
    # another node (here: another guard on the same Redis, as the danmaku hub builds one)
    other = AbuseGuard(
        shop.svc.ctx.redis, shop.svc.ctx.config.redis_prefix, {"lottery": Limits(0, 0, 0)}, 10
    )
    with pytest.raises(Refused) as refused:
        await other.check("lottery", mallory)
    assert refused.value.status == 403
    assert refused.value.message == "lottery entry refused: this account is blocked"
    with pytest.raises(Refused) as refused:  # a caller names its action
        await other.check("lottery", mallory, name="prize draw")
    assert refused.value.message == "prize draw refused: this account is blocked"
    await other.check("lottery", uid("ok"))  # others pass
    # Redis lost the list: the next check reloads it from the database
    await shop.svc.ctx.redis.delete(shop.svc.abuse.block_key)
    status, err, _h = await _raw(shop, url, {"idempotency_key": "b"}, _viewer(mallory))
    assert status == 403, err
    # an IP and a device, one for an hour
    await api.ok("POST", "/api/shop/blocklist", {"kind": "device", "value": "emu-7"}, 201)
    await api.ok(
        "POST", "/api/shop/blocklist", {"kind": "ip", "value": "127.0.0.1", "ttl_s": 3600}, 201
    )
    status, err, _h = await _raw(
        shop, url, {"idempotency_key": "c"}, {**_viewer(uid("d")), "X-Device-Id": "emu-7"}
    )
    assert (status, err["error"]["scope"]) == (403, "device")
    status, err, _h = await _raw(shop, url, {"idempotency_key": "d"}, _viewer(uid("i")))
    assert (status, err["error"]["scope"]) == (403, "ip")
    listed = await api.ok("GET", "/api/shop/blocklist")
    assert {(e["kind"], e["value"]) for e in listed["items"]} == {
        ("user", mallory),
        ("device", "emu-7"),
        ("ip", "127.0.0.1"),
    }
    assert (await api.ok("GET", "/api/shop/blocklist?kind=ip"))["items"][0]["expires_at"]
    clock.advance(3601)  # the IP's block is over
    status, _b, _h = await _raw(shop, url, {"idempotency_key": "e"}, _viewer(uid("i")))
    assert status == 201
    # unblock; again is 404; bad entries are 400; not for anchors or buyers
    status, _b = await api.call("DELETE", f"/api/shop/blocklist/user/{mallory}")
    assert status == 204
    assert (await api.call("DELETE", f"/api/shop/blocklist/user/{mallory}"))[0] == 404
    status, _b, _h = await _raw(shop, url, {"idempotency_key": "f"}, _viewer(mallory))
    assert status == 201
    for bad in ({"kind": "ip", "value": "1.2.3"}, {"kind": "planet", "value": "x"}):
        assert (await api.call("POST", "/api/shop/blocklist", bad))[0] == 400
    assert api.tokens is not None
    assert (await api.call("GET", "/api/shop/blocklist", token=api.tokens["anchor"]))[0] == 403
    assert (await api.call("GET", "/api/shop/blocklist", token=None, viewer="u1"))[0] == 401


async def test_lottery_entries_have_their_own_limits(shop: ShopEnv) -> None:
    guard = AbuseGuard(
        shop.svc.ctx.redis,
        shop.svc.ctx.config.redis_prefix,
        {"lottery": Limits(user=2, device=0, ip=0)},
        30,
    )
    await shop.svc.abuse.reload()
    user = uid("l")
    await guard.check("lottery", user, None, "10.0.0.1")
    await guard.check("lottery", user, None, "10.0.0.1")
    with pytest.raises(Refused) as refused:
        await guard.check("lottery", user, None, "10.0.0.1")
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert 1 <= refused.value.retry_after <= 30
    assert refused.value.message == (
        f"too many lottery entry attempts from this account; retry in {refused.value.retry_after} s"
    )
    # buying is counted apart
    await shop.svc.abuse.check("buy", user, None, "10.0.0.1")


async def test_flash_sales_refuse_young_accounts(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(flash_min_account_age=600)
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    product = await make_product(shop.api)
    sku = product["skus"][0]["id"]
    sale = await make_sale(shop.api, uid(), sku, stock=50, limit=5)
    url = f"/api/flash-sales/{sale['id']}/buy"
    now = time.time()
    young, old, unknown = uid("y"), uid("o"), uid("n")
    status, err, _h = await _raw(
        shop, url, {"idempotency_key": "a"}, _viewer(young, created=now - 60)
    )
    assert (status, err["error"]["code"]) == (403, "account_too_new"), err
    assert 530 <= err["error"]["retry_after"] <= 540
    status, _b, _h = await _raw(
        shop, url, {"idempotency_key": "a"}, _viewer(old, created=now - 3600)
    )
    assert status == 201
    # no account time in the token: the age counts from the shop's first sight of it
    status, err, _h = await _raw(shop, url, {"idempotency_key": "a"}, _viewer(unknown))
    assert status == 403
    clock.advance(601)
    status, _b, _h = await _raw(shop, url, {"idempotency_key": "a"}, _viewer(unknown))
    assert status == 201
    # normal orders are not concerned
    body = {"sku_id": sku, "quantity": 1, "idempotency_key": "n"}
    status, _b, _h = await _raw(shop, "/api/orders", body, _viewer(uid("z"), created=time.time()))
    assert status == 201


@given(st.sampled_from(["user", "device", "ip", "x"]), st.text(max_size=200))
def test_blocklist_entries_parse_or_refuse(kind: str, value: str) -> None:
    try:
        out = normalise_entry(kind, value)
    except ValueError:
        return
    assert kind in ("user", "device", "ip") and 1 <= len(out) <= 128
    assert normalise_entry(kind, out) == out


async def test_a_burst_is_checked_together_and_counted_exactly(shop: ShopEnv) -> None:
    import asyncio

    guard = AbuseGuard(
        shop.svc.ctx.redis,
        shop.svc.ctx.config.redis_prefix,
        {"buy": Limits(user=20, device=0, ip=0)},
        60,
    )
    await shop.svc.abuse.reload()
    sent: list[int] = []
    real = guard.redis.register_script

    def counting(script: str) -> Any:  # how many script runs the burst took
        inner = real(script)

        async def run(keys: list[str], args: list[Any]) -> Any:
            sent.append(int(args[2]))
            return await inner(keys=keys, args=args)

        return run

    guard.redis = type("R", (), {"register_script": staticmethod(counting)})()
    users = [uid("b") for _ in range(5)]

    async def one(user: str) -> int:
        try:
            await guard.check("buy", user)
        except Refused as exc:
            return exc.status
        return 200

    results = await asyncio.gather(*(one(u) for u in users for _ in range(30)))
    assert len(results) == 150
    for i in range(5):
        mine = results[i * 30 : (i + 1) * 30]
        assert mine.count(200) == 20 and mine.count(429) == 10
    assert sum(sent) == 150 and len(sent) < 150  # batched: fewer runs than attempts


async def test_account_age_from_the_control_plane_token(shop_factory: Any) -> None:
    """The app backend tells control when the viewer's account was created; the token it
    gets carries it and the flash sale decides from it."""
    import asyncio

    shop: ShopEnv = await shop_factory(flash_min_account_age=3600)
    api = shop.api
    product = await make_product(api)
    created = await api.ok(
        "POST",
        "/api/broadcasts",
        {
            "title": "age",
            "scheduled_start": "2030-01-01T12:00:00Z",
            "product_ids": [product["id"]],
        },
        201,
    )
    bid = int(created["id"])
    async with asyncio.timeout(10):  # the shop learns of the broadcast from control's event
        while not (await api.ok("GET", f"/api/broadcasts/{bid}/shelf"))["items"]:
            await asyncio.sleep(0.02)
    sale = await make_sale(api, bid, product["skus"][0]["id"], stock=10, limit=1)
    url = f"/api/flash-sales/{sale['id']}/buy"
    for user, age, want in (("young1", 60, 403), ("old1", 86400, 201)):
        minted = await api.ok(
            "POST",
            f"/api/broadcasts/{bid}/viewer-token",
            {"user_id": user, "nick": user, "account_created_at": int(time.time()) - age},
        )
        status, body, _h = await _raw(
            shop, url, {"idempotency_key": "k"}, {"X-Viewer-Token": minted["token"]}
        )
        assert status == want, body
    status, _b = await api.call(
        "POST",
        f"/api/broadcasts/{bid}/viewer-token",
        {"user_id": "x", "nick": "x", "account_created_at": int(time.time()) + 86400},
    )
    assert status == 400  # not in the future
