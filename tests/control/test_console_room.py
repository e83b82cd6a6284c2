"""The console's broadcast room without a stream, in Chromium: the cover shown once
uploaded, the lottery form (a refused start shows its reason in the status line; a keyword
lottery with the rules' fields (an offline-voucher prize with its image, a background,
entry after 1 s of watching) entered by a real Socket.IO viewer, drawn by its
``lottery_id``, then verified in the browser from its audit data; the winner's voucher
redeemed once from the Prizes page, a second try told when and by whom), the comments
with their history after a reload, a moderator's delete, and the live room of a show
never live ("No data yet."). Screenshots under ``tests/artifacts/console/room/``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.control.conftest import make_staff
from tests.control.test_console import console_page, sections, shot_dir, sign_in, wait_for
from tests.danmaku.helpers import Viewer

pytestmark = pytest.mark.slow


async def test_console_room_lottery_comments_cover(
    control_env: dict[str, Any], server_factory: Callable[..., Any], tmp_path: Any
) -> None:
    server = await server_factory(**sections(control_env))
    shots = shot_dir("room")
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        b = await staff.create_broadcast(title="Lottery night")
        bid = b["id"]
        # a PNG to upload as the cover: the push URL's QR code
        async with session.get(
            f"{server.http_url}/api/broadcasts/{bid}/push/qr.png",
            headers={"Authorization": f"Bearer {staff.operator}"},
        ) as r:
            assert r.status == 200
            cover = tmp_path / "cover.png"
            cover.write_bytes(await r.read())
        status, t = await staff.api.call(
            "POST",
            f"/api/broadcasts/{bid}/viewer-token",
            staff.operator,
            json={"user_id": "openid-mei", "nick": "Mei", "ttl": 600},
        )
        assert status == 200, t
        viewer = Viewer()
        async with console_page(server.http_url) as (page, errors):
            await sign_in(page)
            await page.goto(f"{server.http_url}/console/#/b/{bid}")
            await expect(page.locator("#state [data-state]")).to_have_attribute(
                "data-state", "scheduled"
            )

            # the cover, once uploaded, is shown (a decoded image, not a broken one)
            await expect(page.locator("#cover .cover-empty")).to_be_visible()
            await page.set_input_files("#cover-file", str(cover))
            await page.wait_for_function(
                "() => { const i = document.querySelector('#cover-img');"
                " return i && i.complete && i.naturalWidth > 0; }"
            )

            # a keyword lottery without its keyword: the reason stays in the status line
            form = page.locator("#lottery-form")
            # the rules' fields: a voucher prize with its image, a background, a watch time
            await form.locator("input[name=prize]").fill("Oolong 50g")
            await form.locator("select[name=kind]").select_option("voucher")
            await expect(form.locator("input[name=sku]")).to_be_hidden()
            await form.locator("input[name=image_url]").fill("/console/img/oolong.png")
            await form.locator("input[name=background_url]").fill("https://cdn.example/bg.jpg")
            await form.locator("input[name=min_watch_s]").fill("1")
            await form.locator("input[name=keyword]").fill("")
            await form.locator("button[type=submit]").click()
            lottery_status = page.locator("#lottery-status")
            await expect(lottery_status).to_contain_text("empty")
            await expect(lottery_status).to_have_class("status error")
            await form.locator("input[name=keyword]").fill("tea please")
            await form.locator("button[type=submit]").click()
            await expect(lottery_status).to_contain_text("open")

            # a viewer enters by commenting the keyword, and says hello
            await viewer.connect(
                server.http_url, {"room": f"{b['app']}/{b['stream']}", "token": t["token"]}
            )
            try:
                # entry needs a second of watching: refused with retry_after, then entered
                while True:
                    ack = await viewer.call("comment", "tea please")
                    assert ack["ok"], ack
                    if ack["lottery"]["status"] == "entered":
                        break
                    assert ack["lottery"].get("code") == "watch_longer", ack
                    await asyncio.sleep(ack["lottery"]["retry_after"])
                ack = await viewer.call("comment", "hello from Mei")
                assert ack["ok"], ack
            finally:
                await viewer.close()
            comments = page.locator("#comments")
            await expect(comments).to_contain_text("hello from Mei")

            # drawn by the id the API returned: Mei wins
            await page.click("#lottery-draw")
            await expect(lottery_status).to_contain_text("drawn: Mei")
            await page.screenshot(path=str(shots / "1-room.png"), full_page=True)

            # after a reload the comments are still there (the hub's history)
            await page.reload()
            await expect(comments).to_contain_text("hello from Mei")
            await expect(page.locator("#cover-img")).to_be_visible()

            # a moderator's delete removes it from the list
            line = comments.locator("li", has_text="hello from Mei")
            await line.locator("button", has_text="delete").click()
            await expect(line).to_have_count(0)

            # never live: the live room has no data yet
            await page.click("nav.tabs a[data-tab=room]")
            await expect(page.locator("#series-status")).to_have_text("No data yet.")

            # the lottery's history page checks the draw in the browser
            await page.click("nav.tabs a[data-tab=lotteries]")
            lot = page.locator("#lotteries article.lottery").first
            await expect(lot).to_contain_text("keyword “tea please”")
            await expect(lot.locator(".rules")).to_contain_text("entry after 1 s of watching")
            await expect(lot.locator(".prizes")).to_contain_text("Oolong 50g ×1 · voucher")
            await expect(lot.locator(".prize-img")).to_have_attribute(
                "src", "/console/img/oolong.png"
            )
            await expect(lot).to_contain_text("Mei")
            verdict = lot.locator(".verdict")
            await expect(verdict).to_have_class("verdict ok")
            await expect(verdict).to_contain_text("Verified")
            await page.screenshot(path=str(shots / "2-lotteries.png"), full_page=True)
            # the same check refuses altered audit data (a swapped winner, another seed)
            lid = await lot.get_attribute("data-lottery")
            refused = await page.evaluate(
                """async (lid) => {
                    const { verifyLottery } = await import("/console/lib/verify.js");
                    const r = await fetch(`/api/danmaku/lotteries/${lid}?entrants=1`);
                    const lot = await r.json();
                    const swapped = { ...lot, winners: [{ user_id: "someone-else" }] };
                    const reseeded = { ...lot, seed: "0".repeat(64) };
                    const run = async () => [(await verifyLottery(lot)).ok,
                        (await verifyLottery(swapped)).ok, (await verifyLottery(reseeded)).ok];
                    const webcrypto = await run();
                    // without WebCrypto (plain http on another host): @noble/hashes
                    Object.defineProperty(crypto, "subtle", { value: undefined });
                    return [...webcrypto, ...(await run()), crypto.subtle === undefined];
                }""",
                lid,
            )
            assert refused == [True, False, False] * 2 + [True], refused

            # Mei's voucher: from the winner's link to their prizes, redeemed once; the
            # code typed again says when and by whom it was redeemed
            await lot.locator("a", has_text="openid-mei").click()
            voucher = page.locator("#prizes-list tr", has_text="voucher")

            async def granted() -> bool:  # the shop grants it from the outbox
                if await voucher.count():
                    return True
                await page.click("#prizes-lookup button[type=submit]")
                return False

            await wait_for(granted, "Mei's voucher granted")
            code = (await voucher.locator("b.mono").inner_text()).strip()
            assert len(code) >= 8, code
            await voucher.locator("button.redeem").click()
            redeem_status = page.locator("#redeem-status")
            await expect(redeem_status).to_contain_text(f"Voucher {code} redeemed")
            await expect(voucher).to_contain_text("redeemed")
            await page.fill("#redeem-form input[name=code]", code.lower())
            await page.click("#redeem-form button[type=submit]")
            await expect(redeem_status).to_contain_text("Already redeemed")
            await expect(redeem_status).to_contain_text("by operator1")
            await page.screenshot(path=str(shots / "3-prizes.png"), full_page=True)
            assert not errors, errors
