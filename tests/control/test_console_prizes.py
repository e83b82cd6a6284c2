"""The console's Prizes page in Chromium: the latest prizes, each with its name, lottery,
winner, state and its order (a product prize), coupon or voucher; filtered by state and by
lottery; a voucher redeemed from the list. Screenshot under
``tests/artifacts/console/prizes/``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.control.conftest import make_staff
from tests.control.test_console import console_page, sections, shot_dir, sign_in

pytestmark = pytest.mark.slow


def prize(lottery: str, user: str, n: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"lottery_id": lottery, "user_id": user, "prize": body, "n": n, "room": "live/p"}


async def test_console_lists_prizes_with_what_to_do(
    control_env: dict[str, Any], server_factory: Callable[..., Any]
) -> None:
    server = await server_factory(**sections(control_env))
    shots = shot_dir("prizes")
    tag = uuid.uuid4().hex[:6]
    lottery, other = f"lot{tag}a", f"lot{tag}b"
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        api, op = staff.api, staff.operator
        product = await staff.ok(
            "POST",
            "/api/products",
            {
                "title": "Merino scarf",
                "images": ["https://img.example/scarf.jpg"],
                "skus": [{"specs": {"colour": "red"}, "price_fen": 9900, "stock": 5}],
            },
            201,
        )
        sku = product["skus"][0]["id"]
        grants = [
            prize(lottery, "mei", 0, {"name": "Red scarf", "stock": 1, "sku": sku}),
            prize(lottery, "lin", 1, {"name": "Tea tasting", "stock": 1, "kind": "voucher"}),
            prize(other, "wang", 0, {"name": "Signed photo", "stock": 1}),
        ]
        made = []
        for body in grants:
            status, g = await api.call("POST", "/api/lottery/prizes", op, json=body)
            assert status == 201, g
            made.append(g)

        async with console_page(server.http_url) as (page, errors):
            await sign_in(page)
            await page.goto(server.http_url + "/console/#/prizes")
            rows = page.locator("#prizes-list tbody tr")
            await expect(rows).to_have_count(3)
            scarf = rows.filter(has_text="Red scarf")
            await expect(scarf.locator(".lottery")).to_have_text(lottery)
            await expect(scarf.locator(".winner")).to_have_text("mei")
            await expect(scarf.locator(".prize-state")).to_have_text("to ship")
            await expect(scarf.locator("a.order")).to_have_attribute(
                "href", f"#/orders/{made[0]['order_id']}"
            )
            await expect(rows.filter(has_text="Signed photo").locator(".prize-state")).to_have_text(
                "owed"
            )

            # what is still owed: the manual prize and the unredeemed voucher
            await page.select_option("#prizes-lookup select[name=state]", "owed")
            await page.click("#prizes-lookup button[type=submit]")
            await expect(rows).to_have_count(2)
            await expect(rows.filter(has_text="Red scarf")).to_have_count(0)
            voucher = rows.filter(has_text="Tea tasting")
            await voucher.locator("button.redeem").click()
            await expect(page.locator("#redeem-status")).to_contain_text("redeemed")
            await expect(rows).to_have_count(1)  # the voucher is no longer owed

            # one lottery's prizes, from a lottery id in the list
            await page.select_option("#prizes-lookup select[name=state]", "")
            await page.click("#prizes-lookup button[type=submit]")
            await rows.filter(has_text="Red scarf").locator(".lottery").click()
            await expect(rows).to_have_count(2)
            await expect(rows.filter(has_text="Tea tasting").locator(".prize-state")).to_have_text(
                "redeemed"
            )
            await page.screenshot(path=str(shots / "prizes.png"), full_page=True)
            assert not errors, errors
