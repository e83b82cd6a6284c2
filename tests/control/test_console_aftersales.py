"""The console's After-sales page in Chromium: two buyers asked for refunds of their paid
orders (through the API with their viewer tokens); the open queue shows each with its
order, the buyer masked as order views show it, the reason and the amount; the operator
approves one with an amended amount (the order's refund path pays it back: the order shows
``refunded_fen``), tries to reject the other without a reason (refused, still open), then
rejects it with one (the buyer sees the reason). Screenshot under
``tests/artifacts/console/aftersales/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from core.tokens import issue_token
from tests.conftest import TEST_SECRET
from tests.control.conftest import Staff, make_staff, paid_order, wait_for
from tests.control.test_console import console_page, sections, shot_dir, sign_in

pytestmark = pytest.mark.slow

ANN_ADDRESS = "上海市徐汇区漕溪北路 1 号"
BOB_ADDRESS = "北京市海淀区中关村大街 2 号"


def _as(user: str) -> dict[str, str]:
    """The headers of ``user``'s app: their viewer token."""
    return {"X-Viewer-Token": issue_token(TEST_SECRET, user, user)}


async def _ask(staff: Staff, order_id: str, user: str, body: dict[str, Any]) -> Any:
    status, req = await staff.api.call(
        "POST",
        f"/api/orders/{order_id}/aftersales",
        json=body,
        headers=_as(user),
    )
    assert status == 201, req
    return req


async def test_console_approves_and_rejects_after_sales(
    control_env: dict[str, Any], server_factory: Callable[..., Any]
) -> None:
    server = await server_factory(**sections(control_env))
    shots = shot_dir("aftersales")
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        product = await staff.ok(
            "POST",
            "/api/products",
            {
                "title": "Merino scarf",
                "skus": [{"specs": {"colour": "red"}, "price_fen": 9900, "stock": 5}],
            },
            201,
        )
        sku = product["skus"][0]["id"]
        b = await staff.create_broadcast(product_ids=[product["id"]])
        await staff.ok(
            "PUT", f"/api/broadcasts/{b['id']}/shelf", {"items": [{"product_id": product["id"]}]}
        )
        ann, bob = [
            await paid_order(staff, b["id"], sku, _as(user), recipient)
            for user, recipient in (
                ("ann-1", {"name": "张三", "phone": "13800001234", "address": ANN_ADDRESS}),
                ("bob-2", {"name": "李四", "phone": "13900005678", "address": BOB_ADDRESS}),
            )
        ]
        asked_ann = await _ask(
            staff,
            ann["id"],
            "ann-1",
            {"kind": "refund_only", "reason": "damaged", "text": "torn at the edge"},
        )
        asked_bob = await _ask(
            staff, bob["id"], "bob-2", {"kind": "refund_only", "reason": "no_longer_wanted"}
        )

        async with console_page(server.http_url) as (page, errors):
            await sign_in(page)
            await page.click("a[data-nav=aftersales]")
            rows = page.locator("#aftersales-list tbody tr")
            await expect(rows).to_have_count(2)
            first = rows.nth(0)  # the queue is oldest first
            await expect(first).to_have_attribute("data-request", asked_ann["id"])
            await expect(first.locator(".buyer")).to_contain_text("ann-1")
            await expect(first.locator(".buyer")).to_contain_text("张* 138****1234")
            await expect(first.locator(".buyer")).not_to_contain_text("张三")
            await expect(first.locator(".reason")).to_contain_text("damaged")
            await expect(first.locator(".reason")).to_contain_text("torn at the edge")
            await expect(first.locator(".amount")).to_contain_text("¥99.00")
            await page.screenshot(path=str(shots / "queue.png"), full_page=True)

            # approve Ann's with an amended amount: ¥60.00 of ¥99.00
            await first.locator("input[name=amount]").fill("60")
            await first.locator("button.approve").click()
            await expect(page.locator("#aftersales-status")).to_contain_text("approved")
            await expect(rows).to_have_count(1)

            async def refunded() -> Any:
                order = await staff.ok("GET", f"/api/orders/{ann['id']}")
                return order if order["refunded_fen"] == 6000 else None

            order = await wait_for(refunded, "Ann's order refunded ¥60.00")
            assert order["state"] == "paid"  # a partial refund moves no state

            # Bob's: a rejection needs a reason
            bob_row = page.locator(f"tr[data-request='{asked_bob['id']}']")
            await bob_row.locator("button.reject").click()
            await expect(page.locator("#aftersales-status")).to_contain_text("say why")
            await expect(rows).to_have_count(1)
            await bob_row.locator("input[name=reason]").fill("opened and used")
            await bob_row.locator("button.reject").click()
            await expect(page.locator("#aftersales-status")).to_contain_text("rejected")
            await expect(page.locator("#aftersales-list")).to_contain_text("No open request")

            # the decided ones, by state
            await page.select_option("#aftersales-filter select[name=state]", "rejected")
            await page.click("#aftersales-filter button[type=submit]")
            await expect(rows).to_have_count(1)
            await expect(rows.nth(0)).to_contain_text("rejected: opened and used")
            await page.select_option("#aftersales-filter select[name=state]", "")
            await page.click("#aftersales-filter button[type=submit]")
            await expect(rows).to_have_count(2)
            await expect(
                page.locator(f"tr[data-request='{asked_ann['id']}'] .state")
            ).to_contain_text("refunded")
            await page.screenshot(path=str(shots / "decided.png"), full_page=True)
            assert not errors, errors

        status, mine = await staff.api.call(
            "GET",
            "/api/me/aftersales",
            headers=_as("bob-2"),
        )
        assert status == 200
        assert [(r["state"], r["note"]) for r in mine["items"]] == [("rejected", "opened and used")]
        assert (await staff.ok("GET", f"/api/orders/{bob['id']}"))["refunded_fen"] == 0
