"""Who lists which orders (``GET /api/orders``): operators all of them (filters and pages),
buyers only their own, anchors those of their own broadcasts (the broadcast's anchor as
the shop knows it, not the order's attribution), moderators none."""

from __future__ import annotations

import uuid

from control.accounts import Role
from control.api import CONTROL
from tests.shop.conftest import make_product, uid


async def _place(shop, user: str, sku: int, broadcast: int, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "user_id": user,
            "sku_id": sku,
            "quantity": 1,
            "broadcast_id": broadcast,
            "idempotency_key": f"{broadcast}-{i}",
        }
        ids.append((await shop.api.ok("POST", "/api/orders", body, 201, token=None))["id"])
    return ids


async def _listing(shop, query: str = "", **kw) -> tuple[int, dict]:
    return await shop.api.get("/api/orders" + (f"?{query}" if query else ""), **kw)


async def test_who_lists_which_orders(shop) -> None:
    api = shop.api
    assert api.tokens is not None
    anchor_id = api.tokens["anchor_id"]
    product = await make_product(api, stock=100)
    sku = product["skus"][0]["id"]
    mine, other = uid(), uid()
    await api.ok("PUT", f"/api/broadcasts/{mine}/shop", {"anchor_id": anchor_id})
    await api.ok("PUT", f"/api/broadcasts/{other}/shop", {"anchor_id": "999999"})
    for b in (mine, other):  # the shop sells only what a broadcast's shelf shows
        await api.ok(
            "PUT", f"/api/broadcasts/{b}/shelf", {"items": [{"product_id": product["id"]}]}
        )
    alice_mine = await _place(shop, "alice", sku, mine, 3)
    bob_mine = await _place(shop, "bob", sku, mine, 2)
    alice_other = await _place(shop, "alice", sku, other, 2)
    every = set(alice_mine + bob_mine + alice_other)

    # the operator: all of them, and each filter
    status, page = await _listing(shop, "limit=200")
    assert status == 200, page
    assert every <= {o["id"] for o in page["items"]}
    _s, page = await _listing(shop, f"broadcast_id={mine}")
    assert {o["id"] for o in page["items"]} == set(alice_mine + bob_mine)
    _s, page = await _listing(shop, f"broadcast_id={mine}&user_id=bob")
    assert {o["id"] for o in page["items"]} == set(bob_mine)
    _s, page = await _listing(shop, f"broadcast_id={other}&state=pending_payment")
    assert {o["id"] for o in page["items"]} == set(alice_other)
    _s, page = await _listing(shop, f"broadcast_id={other}&state=paid")
    assert page["items"] == []
    # paging: pages of 2 cover the broadcast's 5 orders, newest first, none twice
    seen: list[str] = []
    cursor = ""
    for _round in range(10):
        _s, page = await _listing(shop, f"broadcast_id={mine}&limit=2{cursor}")
        seen += [o["id"] for o in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(alice_mine + bob_mine) and len(seen) == 5
    status, body = await _listing(shop, "cursor=nonsense")
    assert status == 400, body

    # a buyer: only their own, whatever they ask for
    status, page = await _listing(shop, "limit=200", token=None, viewer="alice")
    assert status == 200
    assert {o["id"] for o in page["items"]} == set(alice_mine + alice_other)
    _s, page = await _listing(shop, f"broadcast_id={mine}", token=None, viewer="bob")
    assert {o["id"] for o in page["items"]} == set(bob_mine)
    status, _body = await _listing(shop, "user_id=alice", token=None, viewer="bob")
    assert status == 403
    status, _body = await _listing(shop, "", token=None, viewer="")
    assert status == 401

    # an anchor: the orders of their own broadcasts only
    anchor = api.tokens["anchor"]
    status, page = await _listing(shop, "limit=200", token=anchor)
    assert status == 200, page
    assert {o["id"] for o in page["items"]} == set(alice_mine + bob_mine)
    _s, page = await _listing(shop, f"broadcast_id={other}", token=anchor)
    assert page["items"] == []
    _s, page = await _listing(shop, "user_id=alice", token=anchor)
    assert {o["id"] for o in page["items"]} == set(alice_mine)

    # a moderator: none
    accounts = shop.server.app[CONTROL].accounts
    user = await accounts.create_user(
        f"shopmod{uuid.uuid4().hex[:8]}", "correct-horse-battery-9", Role.MODERATOR
    )
    moderator, _info = await accounts.issue_token(user.id, "api", "shop tests")
    status, body = await _listing(shop, "", token=moderator)
    assert (status, body["error"]["code"]) == (403, "forbidden")
