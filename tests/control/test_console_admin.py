"""The console's back-office pages in Chromium: the catalog (a SKU added, a price changed,
a product renamed, an image uploaded and shown, a fake one refused, the image removed), a
broadcast's shelf (reordered, a product taken off), coupons (given to two buyers),
accounts and API tokens (created, shown once, revoked), webhooks (a real receiver gets the
ping, the delivery log shows it), the live overview, replays and payment notifications
when nothing happened, a stream without a broadcast kicked from the live overview, then
its name banned (its publish refused) and the ban lifted, a sharer registered with a share
link and the order credited to them, a buyer blocked (their order refused) and unblocked;
then the anchor's console (their show, no operator page) and the moderator's (comments and
room controls). Screenshots under ``tests/artifacts/console/admin/``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import expect

from tests.control.conftest import Staff, make_staff, paid_order, place_order, wait_for
from tests.control.publisher import start_ffmpeg, stop
from tests.control.test_console import (
    RECIPIENT,
    console_page,
    sections,
    shot_dir,
    sign_in,
)
from tests.shop.test_product_images import png

pytestmark = pytest.mark.slow


async def _receiver() -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got


async def _viewer(staff: Staff, bid: int, user: str) -> dict[str, str]:
    status, t = await staff.api.call(
        "POST",
        f"/api/broadcasts/{bid}/viewer-token",
        staff.operator,
        json={"user_id": user, "nick": user, "ttl": 600},
    )
    assert status == 200, t
    return {"X-Viewer-Token": t["token"]}


async def _kick_and_ban(page: Any, staff: Staff, server: Any, shots: Any) -> None:
    row = page.locator('#live-streams tr[data-stream="live/nobcast"]')
    proc = await start_ffmpeg(server.push_url("nobcast"))
    try:
        await expect(row).to_contain_text("no broadcast", timeout=20000)
        await row.locator("button.kick").click()  # confirm() is accepted
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        await stop(proc)
    proc = await start_ffmpeg(server.push_url("nobcast"))
    try:
        await expect(row).to_contain_text("no broadcast", timeout=20000)
        await row.locator("button.ban").click()
        form = page.locator("#ban-form")
        await expect(form.locator("input[name=stream]")).to_have_value("nobcast")
        await form.locator("select[name=duration]").select_option("3600")
        await form.locator("input[name=reason]").fill("test pattern spam")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#ban-status")).to_contain_text("live/nobcast banned until")
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        await stop(proc)
    banned = page.locator('#stream-bans tr[data-stream="live/nobcast"]')
    await expect(banned).to_contain_text("test pattern spam")
    await expect(row).to_have_count(0)
    status, ban = await staff.api.call("GET", "/api/streams/live/nobcast/ban", staff.operator)
    assert status == 200 and ban["by"] == "operator1" and ban["until"], ban
    refused = await start_ffmpeg(server.push_url("nobcast"), seconds=5)
    try:
        assert await asyncio.wait_for(refused.wait(), 15) != 0
    finally:
        await stop(refused)
    await page.screenshot(path=str(shots / "3b-live-ban.png"), full_page=True)
    await banned.locator("button.lift").click()
    await expect(page.locator("#ban-status")).to_contain_text("ban lifted")
    await expect(page.locator("#stream-bans")).to_contain_text("No stream name is banned.")
    status, _ = await staff.api.call("GET", "/api/streams/live/nobcast/ban", staff.operator)
    assert status == 404


async def test_console_back_office(
    control_env: dict[str, Any], server_factory: Callable[..., Any], tmp_path: Any
) -> None:
    server = await server_factory(**sections(control_env))
    shots = shot_dir("admin")
    runner, hook_url, received = await _receiver()
    try:
        async with aiohttp.ClientSession() as session:
            staff = await make_staff(server, session)
            api, op = staff.api, staff.operator
            ids = []
            for title in ("Jasmine tea", "Tea cups"):
                status, p = await api.call(
                    "POST",
                    "/api/products",
                    op,
                    json={"title": title, "skus": [{"price_fen": 1900, "stock": 10}]},
                )
                assert status == 201, p
                ids.append(p["id"])
            b = await staff.create_broadcast(
                title="Tea morning", product_ids=ids, anchor_id=staff.ids["anchor"]
            )

            async with console_page(server.http_url) as (page, errors):
                await sign_in(page)

                # catalog: a second SKU with attributes; the first SKU's price changed
                await page.click("a[data-nav=catalog]")
                card = page.locator(f'#products article[data-product="{ids[0]}"]')
                await card.locator("button", has_text="+ SKU").click()
                add = card.locator("form.add-sku")
                await add.locator("input[name=colour]").fill("green")
                await add.locator("input[name=size]").fill("250g")
                await add.locator("input[name=price]").fill("45.50")
                await add.locator("input[name=stock]").fill("7")
                await add.locator("button[type=submit]").click()
                await expect(page.locator("#catalog-status")).to_contain_text("added")
                card = page.locator(f'#products article[data-product="{ids[0]}"]')
                await expect(card).to_contain_text("colour: green, size: 250g")
                first = card.locator("tbody tr").first
                await first.locator("input[name=price]").fill("21.00")
                await first.locator("button", has_text="Save").click()
                await expect(page.locator("#catalog-status")).to_contain_text("saved")
                _, p = await api.call("GET", f"/api/products/{ids[0]}")
                assert [s["price_fen"] for s in p["skus"]] == [2100, 4550], p
                cups = page.locator(f'#products article[data-product="{ids[1]}"]')
                await cups.locator("summary", has_text="Edit product").click()
                await cups.locator("input[name=title]").fill("Celadon tea cups")
                await cups.locator("button", has_text="Save product").click()
                await expect(page.locator("#catalog-status")).to_contain_text(
                    f"Product #{ids[1]} saved"
                )
                _, p = await api.call("GET", f"/api/products/{ids[1]}")
                assert p["title"] == "Celadon tea cups", p
                # images: a real PNG uploaded and shown; a text file named .png refused
                real, fake = tmp_path / "cups.png", tmp_path / "fake.png"
                real.write_bytes(png(8, 8))
                fake.write_bytes(b"not an image at all")
                await cups.locator("label.upload-images input[type=file]").set_input_files(
                    [str(real), str(fake)]
                )
                await expect(page.locator("#catalog-status")).to_contain_text(
                    "fake.png: the body is not a PNG, JPEG or WebP image"
                )
                cups = page.locator(f'#products article[data-product="{ids[1]}"]')
                uploaded = cups.locator(f'img[src^="/api/products/{ids[1]}/images/"]')
                await expect(uploaded).to_have_count(1)
                await page.wait_for_function(
                    "(sel) => { const i = document.querySelector(sel);"
                    " return i && i.complete && i.naturalWidth === 8; }",
                    arg=f'article[data-product="{ids[1]}"] img[src^="/api/products/"]',
                )
                await page.screenshot(path=str(shots / "1-catalog.png"), full_page=True)
                _, p = await api.call("GET", f"/api/products/{ids[1]}")
                assert len(p["images"]) == 1 and p["images"][0].endswith(".png"), p
                await cups.locator("button.remove-image").click()  # confirm() accepted
                await expect(page.locator("#catalog-status")).to_contain_text("Image removed")
                await expect(uploaded).to_have_count(0)
                _, p = await api.call("GET", f"/api/products/{ids[1]}")
                assert p["images"] == [], p

                # shelf: the cups first, the tea off shelf
                await page.goto(f"{server.http_url}/console/#/b/{b['id']}/shelf")
                cups = page.locator(f'#shelf li[data-product="{ids[1]}"]')
                await cups.locator("button[title=up]").click()
                await expect(page.locator("#shelf-status")).to_contain_text("Moved")
                tea = page.locator(f'#shelf li[data-product="{ids[0]}"]')
                await tea.locator("button", has_text="Take off").click()
                await expect(page.locator("#shelf-status")).to_contain_text("off shelf")
                _, shelf = await api.call("GET", f"/api/broadcasts/{b['id']}/shelf")
                got = [(i["product"]["id"], i["on_shelf"]) for i in shelf["items"]]
                assert got == [(ids[1], True), (ids[0], False)], got

                # coupons: given to two buyers at once, listed for the first
                await page.click("a[data-nav=coupons]")
                grant = page.locator("#coupon-grant")
                await grant.locator("input[name=user_id]").fill("openid-li, openid-mo")
                await grant.locator("input[name=value]").fill("8")
                await grant.locator("button[type=submit]").click()
                await expect(page.locator("#coupons-status")).to_contain_text(
                    "2 coupon(s) of ¥8.00 given"
                )
                _, mo = await api.call("GET", "/api/users/openid-mo/coupons", op)
                assert [c["value_fen"] for c in mo["items"]] == [800], mo
                await expect(page.locator("#coupons-list")).to_contain_text("¥8.00")
                await expect(page.locator("#coupons-list")).to_contain_text("unused")

                # accounts: a new moderator; an API token shown once, then revoked
                await page.click("a[data-nav=accounts]")
                uf = page.locator("#user-form")
                await uf.locator("input[name=username]").fill("mod2")
                await uf.locator("input[name=password]").fill("a long enough password")
                await uf.locator("select[name=role]").select_option("moderator")
                await uf.locator("button[type=submit]").click()
                await expect(page.locator("#users")).to_contain_text("mod2")
                await page.fill("#token-form input[name=name]", "mini-program backend")
                await page.click("#token-form button[type=submit]")
                secret = await page.locator("#new-token").input_value()
                status, _ = await api.call("GET", "/api/me", secret)
                assert status == 200
                row = page.locator("#tokens tr", has_text="mini-program backend")
                await row.locator("button", has_text="Revoke").click()
                await expect(row).to_contain_text("revoked")
                status, _ = await api.call("GET", "/api/me", secret)
                assert status == 401
                await page.screenshot(path=str(shots / "2-accounts.png"), full_page=True)

                # webhooks: a real receiver; the ping shows in the delivery log
                await page.click("a[data-nav=webhooks]")
                wf = page.locator("#webhook-form")
                await wf.locator("input[name=url]").fill(hook_url)
                await wf.locator("input[name=events]").fill("broadcast.*")
                await wf.locator("button[type=submit]").click()
                await expect(page.locator("#webhook-secret input")).not_to_have_value("")
                hook = page.locator("#webhooks tbody tr").first
                await hook.locator("button", has_text="Ping").click()

                async def pinged() -> bool:
                    return any(e.get("topic") == "ping" for e in received)

                await wait_for(pinged, "the ping at the receiver")
                await hook.locator("button", has_text="Deliveries").click()
                await expect(page.locator("#deliveries tbody tr").first).to_contain_text(
                    "delivered", timeout=10000
                )
                await page.screenshot(path=str(shots / "3-webhooks.png"), full_page=True)

                # nothing is live: the overview says so; no replays yet
                await page.click("a[data-nav=live]")
                await expect(page.locator("#live-streams")).to_contain_text(
                    "No stream is live on this node."
                )
                await page.click("a[data-nav=replays]")
                await expect(page.locator("#replays")).to_contain_text("No replays yet.")
                # a stream live without a broadcast: kicked, then its name banned and lifted
                await page.click("a[data-nav=live]")
                await _kick_and_ban(page, staff, server, shots)
                await page.goto(f"{server.http_url}/console/#/payments")
                await expect(page.locator("#notifications")).to_contain_text("No notification")

                # a sharer registered, their link made; a buyer arriving through it orders
                await page.click("a[data-nav=sharers]")
                await page.fill("#sharer-form input[name=user_id]", "openid-zoe")
                await page.fill("#sharer-form input[name=name]", "Zoe")
                await page.click("#sharer-form button[type=submit]")
                await expect(page.locator("#sharers")).to_contain_text("openid-zoe")
                await page.goto(f"{server.http_url}/console/#/b/{b['id']}/sharers")
                await page.fill("#share-form input[name=sharer_id]", "openid-zoe")
                await page.click("#share-form button[type=submit]")
                share_url = await page.locator("#share-url").input_value()
                share = parse_qs(urlsplit(share_url).query)["share"][0]
                buyer = await _viewer(staff, b["id"], "openid-kai")
                status, visit = await api.call(
                    "POST",
                    f"/api/broadcasts/{b['id']}/share-visits",
                    json={"share": share},
                    headers=buyer,
                )
                assert status == 200 and visit["credited_to"] == "openid-zoe", visit
                # (the order carries the link's token too, as the viewer page sends it)
                order = await paid_order(
                    staff,
                    b["id"],
                    p["skus"][0]["id"],
                    {**buyer, "X-Share-Token": share},
                    RECIPIENT,
                )
                await page.reload()
                zoe = page.locator('#sharer-sales tr[data-sharer="openid-zoe"]')
                price = p["skus"][0]["price_fen"]  # the tea cups' SKU
                await expect(zoe).to_contain_text(f"¥{price / 100:.2f}")
                await expect(zoe.locator("td.visits")).to_have_text("1")  # Kai's visit

                # the buyer blocked: their next order is refused; unblocked again
                await page.click("a[data-nav=blocklist]")
                await page.fill("#block-form input[name=value]", "openid-kai")
                await page.fill("#block-form input[name=reason]", "chargebacks")
                await page.click("#block-form button[type=submit]")
                await expect(page.locator("#blocklist")).to_contain_text("chargebacks")
                status, refused = await place_order(
                    staff, b["id"], p["skus"][0]["id"], buyer, RECIPIENT
                )
                assert status == 403 and refused["error"]["code"] == "blocked", refused
                await (
                    page.locator('#blocklist tr[data-value="openid-kai"]').locator("button").click()
                )
                await expect(page.locator("#blocklist")).to_contain_text("Nobody is blocked.")
                assert order["id"]

                # the anchor: their show with its card picker, none of the operators' pages
                await page.click("#logout")
                await sign_in(page, "anchor1")
                for nav in ("live", "catalog", "coupons", "webhooks", "new"):
                    await expect(page.locator(f"a[data-nav={nav}]")).to_be_hidden()
                await expect(page.locator("a[data-nav=orders]")).to_be_visible()
                await page.locator("#schedule-body tr", has_text="Tea morning").click()
                await expect(page.locator("#card-picker")).to_contain_text("Celadon tea cups")
                await expect(page.locator("#qr img")).to_be_visible()
                for gone in ("#lottery-card", "#edit-broadcast", "#announce-form"):
                    await expect(page.locator(gone)).to_have_count(0)

                # the moderator: the room's comments and controls, no push URL or card
                await page.click("#logout")
                await sign_in(page, "moderator1")
                await page.locator("#schedule-body tr", has_text="Tea morning").click()
                await page.fill("#announce-form input[name=text]", "Welcome to tea morning")
                await page.click("#announce-form button[type=submit]")
                await expect(page.locator("#moderation-status")).to_contain_text("posted")
                await expect(page.locator("#push")).to_be_hidden()
                for gone in ("#card-card", "#lottery-card", "#edit-broadcast"):
                    await expect(page.locator(gone)).to_have_count(0)
                assert not errors, errors
    finally:
        await runner.cleanup()
