"""After-sales from the viewer page in real headless Chromium, demo-style (anonymous viewer
tokens, the simulated payment provider): a viewer buys from the bag's shelf and pays; in
the bag's order list they ask for after-sales (申请售后: kind, reason, words, amount); the
operator rejects it through the API and the order shows the reason; they ask again and
withdraw; they ask once more and the operator approves: the order shows refunded, and the
API agrees (the order ``refunded``, ``refunded_fen`` its amount). A phone screenshot is
kept in ``tests/viewer/artifacts/``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.mediautil import operator_token
from tests.viewer.test_browser import (
    ARTIFACTS,
    Operator,
    _browser,
    _viewer,
    checkout,
    tea_on_shelf,
)

PRICE = 3900


async def _bag(page: Any) -> Any:
    """Open the bag afresh (as a viewer does) and its first order's row."""
    if await page.locator("#sheet").is_visible():
        await page.click("#sheet-close")
    await page.click("#bag")
    row = page.locator("#my-orders li[data-order-id]").first
    await row.wait_for(timeout=15_000)
    return row


async def _ask(page: Any, reason: str, words: str) -> None:
    row = await _bag(page)
    await row.locator("button.as-ask").click()
    await page.locator("#as-submit").wait_for(timeout=10_000)
    await page.select_option("#as-reason", reason)
    await page.fill("#as-text", words)
    await page.click("#as-submit")


async def _open_request(op: Operator, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        queue = await op.call("GET", "/api/aftersales?state=open")
        found = [r for r in queue["items"] if r["order_id"] == order_id]
        if found:
            return found[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, queue
        await asyncio.sleep(0.1)


async def test_viewer_asks_for_a_refund_and_sees_it_decided(server_factory: Any) -> None:
    from playwright.async_api import async_playwright

    server = await server_factory(viewer={"anonymous_tokens": True})
    op = Operator(server.http_url, await operator_token(server))
    log: list[str] = []
    try:
        product, b = await tea_on_shelf(op, stock=5, price=PRICE)
        async with async_playwright() as pw:
            browser = await _browser(pw)
            try:
                page = await _viewer(
                    browser, f"{server.http_url}/watch/{b['app']}/{b['stream']}", log
                )
                await page.wait_for_function("window.berrylive?.viewer?.token", timeout=20_000)
                uid = await page.evaluate("berrylive.viewer.user.uid")

                # buy from the bag's shelf and pay (the simulator)
                await page.click("#bag")
                await page.locator(
                    f"#shelf-list li[data-product-id='{product['id']}'] button"
                ).click()
                await checkout(page, "张三", "13800001234", "上海市徐汇区漕溪北路 1 号")
                orders = await op.call("GET", f"/api/orders?user_id={uid}")
                (order,) = orders["items"]
                assert order["state"] == "paid"

                # an unshipped order: refund only; the buyer asks, the operator rejects
                row = await _bag(page)
                await row.locator("button.as-ask").click()
                kinds = await page.locator("#as-kind option").evaluate_all(
                    "opts => opts.map(o => o.value)"
                )
                assert kinds == ["refund_only"]
                await page.click("#sheet-close")
                await _ask(page, "damaged", "the tin is dented")
                state = page.locator(f"li[data-order-id='{order['id']}'] .as-state")
                await state.and_(page.locator("[data-state='open']")).wait_for(timeout=15_000)
                req = await _open_request(op, order["id"])
                assert (req["reason"], req["text"], req["amount_fen"]) == (
                    "damaged",
                    "the tin is dented",
                    PRICE,
                )
                await op.call(
                    "POST", f"/api/aftersales/{req['id']}/reject", {"reason": "send a photo"}
                )
                row = await _bag(page)
                await row.locator(".as-state[data-state='rejected']").wait_for(timeout=10_000)
                assert "send a photo" in await row.locator(".as-state").inner_text()

                # asked again, then withdrawn by the buyer
                await _ask(page, "damaged", "photo: dented lid")
                row = page.locator(f"li[data-order-id='{order['id']}']")
                await row.locator(".as-state[data-state='open']").wait_for(timeout=15_000)
                await row.locator("button.as-withdraw").click()
                await row.locator(".as-state[data-state='withdrawn']").wait_for(timeout=15_000)
                assert await row.locator("button.as-ask").count() == 1

                # asked once more; the operator approves: the page shows it refunded
                await _ask(page, "not_as_described", "not first flush")
                await row.locator(".as-state[data-state='open']").wait_for(timeout=15_000)
                req = await _open_request(op, order["id"])
                await op.call("POST", f"/api/aftersales/{req['id']}/approve")
                deadline = time.monotonic() + 20
                while True:
                    row = await _bag(page)
                    if await row.locator(".as-state[data-state='refunded']").count():
                        break
                    assert time.monotonic() < deadline, await row.inner_text()
                    await asyncio.sleep(0.3)
                assert await row.get_attribute("data-state") == "refunded"
                assert "已退款" in await row.locator(".order-line").inner_text()
                assert await row.locator("button.as-ask").count() == 0  # nothing left
                got = await op.call("GET", f"/api/orders/{order['id']}")
                assert (got["state"], got["refunded_fen"]) == ("refunded", PRICE)
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "viewer-aftersales.png"))
            finally:
                await browser.close()
        assert not [x for x in log if x.startswith("pageerror")], log
    finally:
        await op.session.close()
