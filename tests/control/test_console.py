"""The operator console in a real browser: headless Chromium driven by Playwright.

One shop evening, as an operator runs it: sign in, build the catalog (a product with a
colour/size SKU), schedule a broadcast with it, go live with ffmpeg (the push URL copied
from the page), push the product's card, run a flash sale, see a buyer's order (placed
through the API with a viewer token and paid at the simulator) arrive in the figures and
the flash sale's sold/left, refund it from the order page, end the show and find the
after-show summary. Screenshots of each stage are kept under ``tests/artifacts/console/``
(ignored by git; see docs/control.md). The browser comes from ``tests/browser.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import ConsoleMessage, Dialog

from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.control.conftest import PASSWORD, Staff, make_staff, wait_for
from tests.control.publisher import start_ffmpeg, stop

pytestmark = pytest.mark.slow

RECIPIENT = {"name": "王芳", "phone": "13812341234", "address": "上海市 长宁路 1 号"}
PROMPT_ANSWER = "refund from the console test"  # the refund's reason too
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"


def sections(control_env: dict[str, Any]) -> dict[str, Any]:
    """The server's config sections: control's short grace periods; a WebRTC endpoint (when
    the build has one) on a free UDP port, never the fixed default another server holds."""
    from control.config import Config

    out: dict[str, Any] = {"control": control_env}
    if "webrtc" in {f.name for f in dataclasses.fields(Config)}:
        out["webrtc"] = {"udp_port": 0}
    return out


def shot_dir(name: str) -> Path:
    d = ARTIFACTS / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.asynccontextmanager
async def console_page(base: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A signed-out console page in a fresh headless Chromium; the list collects page errors."""
    from playwright.async_api import async_playwright, expect

    # the machine is shared: give every expectation the page's 15 s, not Playwright's 5 s
    expect.set_options(timeout=15000)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000})
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            page = await context.new_page()
            page.set_default_timeout(15000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def on_console(msg: ConsoleMessage) -> None:
                if msg.type == "error":  # shown with a failure: the 404s the page expects too
                    print("console:", msg.text)

            async def on_dialog(dialog: Dialog) -> None:
                # a prompt() (a ban's reason) gets an answer; confirm() gets OK
                await dialog.accept(PROMPT_ANSWER if dialog.type == "prompt" else "")

            page.on("console", on_console)
            page.on("dialog", on_dialog)
            await page.goto(base + "/console/")
            yield page, errors
        finally:
            await browser.close()


async def sign_in(page: Any, username: str = "operator1") -> None:
    from playwright.async_api import expect

    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#who")).to_contain_text(username.rstrip("1"))


async def buy_and_pay(staff: Staff, bid: int, sale_id: int, user: str) -> dict[str, Any]:
    """A buyer (viewer token from the control plane, as the mini-program backend gets it)
    buys one unit in the flash sale and pays at the payment simulator."""
    api = staff.api
    status, t = await api.call(
        "POST",
        f"/api/broadcasts/{bid}/viewer-token",
        staff.operator,
        json={"user_id": user, "nick": "Mei", "ttl": 600},
    )
    assert status == 200, t
    viewer = {"X-Viewer-Token": t["token"]}
    status, order = await api.call(
        "POST",
        f"/api/flash-sales/{sale_id}/buy",
        json={"quantity": 1, "idempotency_key": uuid.uuid4().hex},
        headers=viewer,
    )
    assert status == 201, order
    # where the order core keeps recipients (contracts.md), the buyer gives one before paying
    status, body = await api.call(
        "PUT", f"/api/orders/{order['id']}/recipient", json=RECIPIENT, headers=viewer
    )
    assert status in (200, 404, 405), body
    status, pay = await api.call("POST", f"/api/orders/{order['id']}/pay", headers=viewer)
    assert status == 200, pay
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert r.status == 200

    async def paid() -> bool:
        _, o = await api.call("GET", f"/api/orders/{order['id']}", staff.operator)
        return bool(o["state"] == "paid")

    await wait_for(paid, "order paid")
    return order  # type: ignore[no-any-return]


async def test_console_runs_a_shop_evening(
    control_env: dict[str, Any], server_factory: Callable[..., Any]
) -> None:
    from playwright.async_api import expect

    server = await server_factory(**sections(control_env))
    shots = shot_dir("shop-evening")
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        async with console_page(server.http_url) as (page, errors):
            # sign in (a wrong password first: the error is shown)
            await page.fill("input[name=username]", "operator1")
            await page.fill("input[name=password]", "wrong password")
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#login-error")).to_contain_text("wrong user name")
            await sign_in(page)

            # the catalog: a product with a colour/size SKU
            await page.click("a[data-nav=catalog]")
            form = page.locator("#product-form")
            await form.locator("input[name=title]").fill("Oolong tea 100g")
            await form.locator("input[name=code]").fill("OOLONG-100")
            await form.locator("input[name=colour]").fill("amber")
            await form.locator("input[name=size]").fill("100g")
            await form.locator("input[name=price]").fill("99.00")
            await form.locator("input[name=stock]").fill("50")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#catalog-status")).to_contain_text("created")
            product = page.locator("#products article.product").filter(has_text="Oolong tea")
            await expect(product).to_contain_text("colour: amber, size: 100g")
            await page.screenshot(path=str(shots / "1-catalog.png"), full_page=True)

            # schedule a broadcast with it, starting now (its push URL is open at once)
            await page.click("a[data-nav=new]")
            await page.fill("#new-form input[name=title]", "Tea harvest live")
            await page.select_option("select[name=anchor]", label="anchor one (anchor1)")
            await (
                page.locator("#new-products label", has_text="Oolong tea").locator("input").check()
            )
            await page.evaluate(
                """() => {
                    const local = (ms) => {
                        const d = new Date(ms);
                        d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
                        return d.toISOString().slice(0, 16);
                    };
                    const set = (name, ms) => {
                        document.querySelector(`#new-form input[name=${name}]`).value = local(ms);
                    };
                    set("start", Date.now() + 60e3);
                    set("end", Date.now() + 3 * 3600e3);
                }"""
            )
            await page.click("#new-form button[type=submit]")
            state = page.locator("#state [data-state]")
            await expect(state).to_have_attribute("data-state", "scheduled")
            bid = int(page.url.rsplit("/", 1)[1])
            # the anchor's name, not their id
            await expect(page.locator("#times")).to_contain_text("anchor anchor one")
            await expect(page.locator("#qr img")).to_be_visible()
            push_url = await page.input_value("#push-url")
            assert push_url.startswith("rtmp://127.0.0.1:")
            await page.click("#copy-push")
            assert await page.evaluate("navigator.clipboard.readText()") == push_url
            # the card picker names the product by its title
            picker = page.locator("#card-picker")
            await expect(picker).to_contain_text("Oolong tea 100g")

            proc = await start_ffmpeg(push_url, seconds=90)
            try:
                await expect(state).to_have_attribute("data-state", "live", timeout=20000)
                await expect(page.locator("#fig-bitrate_in")).not_to_have_text("—")
                await page.click("#preview-start")
                await expect(page.locator("#preview-status")).to_contain_text("Playing")
                await page.wait_for_function(
                    "() => document.querySelector('#preview').readyState >= 2"
                )
                # the preview is a viewer of the stream: the figures count it
                await expect(page.locator("#fig-viewers")).to_have_text("1", timeout=10000)

                # push the card: the picker marks it live
                await picker.locator("li", has_text="Oolong tea").locator("button").click()
                await expect(page.locator("#card-status")).to_contain_text("Card pushed")
                await expect(picker.locator("li.live")).to_contain_text("Oolong tea 100g")
                await page.screenshot(path=str(shots / "2-live.png"), full_page=True)

                # the live room before any sale: a first point, no GMV
                await page.click("nav.tabs a[data-tab=room]")
                series_status = page.locator("#series-status")
                totals = page.locator("#series-totals")
                await expect(series_status).to_have_attribute("data-state", "data")
                await expect(totals).to_have_attribute("data-gmv", "0")

                # a flash sale of 5 units at 59.00, open until sold out, its card shown
                await page.click("nav.tabs a[data-tab=flash]")
                flash = page.locator("#flash-form")
                await flash.locator("input[name=price]").fill("59.00")
                await flash.locator("input[name=stock]").fill("5")
                await flash.locator("input[name=kind][value=stock]").check()
                await flash.locator("button[type=submit]").click()
                await expect(page.locator("#flash-status")).to_contain_text("card shown")
                row = page.locator("#flash-list tr[data-sale]").first
                await expect(row).to_contain_text("0 sold · 5 left of 5")
                await expect(row.locator("td.countdown")).to_contain_text("ends in")
                sale_id = int(await row.get_attribute("data-sale") or 0)

                # a buyer orders through the API: the sale and the figures move
                order = await buy_and_pay(staff, bid, sale_id, "openid-mei")
                await expect(row).to_contain_text("1 sold · 4 left of 5", timeout=10000)
                await row.locator("button", has_text="Audit").click()
                await expect(page.locator("#flash-status")).to_contain_text(
                    "4 on sale + 1 held by orders"
                )
                await expect(page.locator("#flash-status")).to_contain_text(": consistent")
                # changed live: one more unit; then closed
                await row.locator("input[type=number]").last.fill("6")
                await row.locator("button", has_text="Save").click()
                await expect(page.locator("#flash-status")).to_contain_text("changed")
                await expect(row).to_contain_text("1 sold · 5 left of 6")
                await row.locator("button", has_text="Close").click()
                await expect(row.locator("[data-state]")).to_have_attribute("data-state", "closed")
                await expect(row.locator("td.countdown")).to_contain_text("closed")
                await page.screenshot(path=str(shots / "3-flash-sale.png"), full_page=True)
                await page.click("nav.tabs a[data-tab=overview]")
                await expect(page.locator("#fig-orders")).to_have_text("1", timeout=10000)
                await expect(page.locator("#fig-gmv")).to_have_text("¥59.00")

                # the live room again: the GMV chart moved by the order
                await page.click("nav.tabs a[data-tab=room]")
                await expect(totals).to_have_attribute("data-gmv", "5900")
                await expect(page.locator("#charts canvas").first).to_be_visible()
                # the same minute by minute as a table, with the card pushes
                await page.click("#series-table summary")
                await expect(page.locator("#series-table")).to_contain_text("¥59.00")
                await expect(page.locator("#series-table")).to_contain_text("Oolong tea 100g")
                await page.screenshot(path=str(shots / "4-live-room.png"), full_page=True)

                # the live overview lists the stream with its broadcast and publisher
                await page.click("a[data-nav=live]")
                live_row = page.locator(f'#live-streams tr[data-stream="live/b{bid}"]')
                await expect(live_row).to_contain_text("Tea harvest live")
                await expect(live_row).to_contain_text("rtmp 127.0.0.1")
                # an HTTP-FLV viewer shows in the row's viewers per protocol
                async with session.get(f"{server.http_url}/live/b{bid}.flv") as flv:
                    assert flv.status == 200
                    assert await flv.content.read(9)  # the FLV header: it is being served
                    await expect(live_row.locator("td.viewers")).to_contain_text(
                        re.compile(r"(?<![-\w])flv 1")  # not ws-flv
                    )

                # the order, found by broadcast and state; refunded from its page
                await page.click("a[data-nav=orders]")
                await page.fill("#orders-filter input[name=broadcast_id]", str(bid))
                await page.select_option("#orders-filter select[name=state]", "paid")
                await page.click("#orders-filter button[type=submit]")
                order_row = page.locator(f'#orders-body tr[data-order="{order["id"]}"]')
                await expect(order_row).to_be_visible()  # shown before it is exported
                # the shown orders as CSV: the order with its product; no phone in full
                async with page.expect_download() as dl:
                    await page.click("#orders-export")
                csv = Path(await (await dl.value).path()).read_text(encoding="utf-8-sig")
                assert order["id"] in csv and "Oolong tea 100g" in csv, csv
                assert RECIPIENT["phone"] not in csv, csv
                await order_row.click()
                await expect(page.locator("#order-state [data-state]")).to_have_attribute(
                    "data-state", "paid"
                )
                _, detail = await staff.api.call(
                    "GET", f"/api/orders/{order['id']}", staff.operator
                )
                if detail.get("recipient"):
                    # masked on the page; in full on the operator's request
                    await expect(page.locator("#recipient")).not_to_contain_text("13812341234")
                    await page.click("#reveal-recipient")
                    await expect(page.locator("#recipient")).to_contain_text("13812341234")
                # a partial refund first (a damaged box): the order stays paid
                await page.fill("#refund-form input[name=reason]", "damaged box")
                await page.fill("#refund-form input[name=amount]", "20.00")
                await page.click("#refund-form button[type=submit]")
                await expect(page.locator("#order-status")).to_contain_text("Refund: done")
                await expect(page.locator("#refunds")).to_contain_text("damaged box")

                async def partly_refunded() -> bool:
                    _, o = await staff.api.call("GET", f"/api/orders/{order['id']}", staff.operator)
                    return bool(o["refunded_fen"] == 2000 and o["state"] == "paid")

                await wait_for(partly_refunded, "the partial refund confirmed")
                await page.reload()
                await expect(page.locator("#refunded")).to_have_text("¥20.00")
                # then the rest: what is left is offered
                amount = page.locator("#refund-form input[name=amount]")
                await expect(amount).to_have_value("39.00")
                await page.fill("#refund-form input[name=reason]", PROMPT_ANSWER)
                await page.click("#refund-form button[type=submit]")
                await expect(page.locator("#order-status")).to_contain_text("Refund: done")
                await expect(page.locator("#order-history")).to_contain_text(PROMPT_ANSWER)
                await page.screenshot(path=str(shots / "5-refund.png"), full_page=True)

                async def refunded() -> bool:
                    _, o = await staff.api.call("GET", f"/api/orders/{order['id']}", staff.operator)
                    return bool(o["state"] == "refunded")

                await wait_for(refunded, "order refunded")
            finally:
                await stop(proc)

            # the ended show: end time and the sales summary; no push, card, lottery, preview
            await page.goto(f"{server.http_url}/console/#/b/{bid}")
            await expect(page.locator("#state [data-state]")).to_have_attribute(
                "data-state", "ended", timeout=20000
            )
            await expect(page.locator("#after-show #ended-at")).to_contain_text("ended")
            await expect(page.locator("#sales-summary")).to_contain_text("¥59.00")
            for gone in ("#card-card", "#lottery-card", "#preview-card"):
                await expect(page.locator(gone)).to_have_count(0)
            await expect(page.locator("#push")).to_be_hidden()
            await page.screenshot(path=str(shots / "6-ended.png"), full_page=True)

            # the schedule names the anchor
            await page.click("a[data-nav=schedule]")
            sched = page.locator("#schedule-body tr", has_text="Tea harvest live")
            await expect(sched.locator("td.anchor")).to_have_text("anchor one")
            assert not errors, errors
