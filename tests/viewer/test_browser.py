"""The viewer page in real headless Chromium (Playwright), two viewers on a real ffmpeg RTMP
stream, through the public APIs only (anonymous demo tokens, as ``make demo`` serves them).

``test_watch_chat_buy_win``: frames advance in both pages; a comment sent in one appears in
the other; a card the operator pushes appears; a buy from the card ends with a paid order
the API shows (paid through the simulated provider); a button lottery drawn by the operator
shows the winner, and the page's own check of the draw passes. A phone-sized screenshot is
kept in ``tests/viewer/artifacts/`` (git-ignored).

``test_away_and_back_then_replay``: the publisher stops: "the anchor will be right back";
it comes back: the page plays again by itself; the broadcast ends: the replay with its
product clip and buy button.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import make_clip, operator_token, start_publisher, stop, wait_for
from viewer.routes import MODULES_DIR

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("viewer") / "gop1.flv", 6.0, gop=30, size="640x360")


@pytest.fixture(scope="module")
def clip_no_bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What WebRTC can carry (no B-frames)."""
    path = tmp_path_factory.mktemp("viewer") / "nob.flv"
    return make_clip(path, 6.0, gop=30, size="640x360", extra=["-bf", "0"])


class Operator:
    """The operator's side, over the REST API with an operator API token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})

    async def call(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        async with self.session.request(method, self.base + path, json=body) as r:
            data = await r.json()
            assert r.status == ok, (method, path, r.status, data)
            return data

    async def state(self, bid: int) -> str:
        return str((await self.call("GET", f"/api/broadcasts/{bid}"))["state"])


@pytest.fixture
async def show(server_factory: Any, clip: Path) -> AsyncIterator[dict[str, Any]]:
    """A live broadcast with one product on its shelf, published by ffmpeg."""
    hlsjs = MODULES_DIR / "hls.js" / "dist" / "hls.min.js"
    assert hlsjs.is_file(), f"{hlsjs} missing: make test runs npm ci in viewer/"
    server = await server_factory(
        viewer={"anonymous_tokens": True},
        relay={"publisher_linger": 1.0},
        replay={"clip_min_seconds": 1.0},
    )
    op = Operator(server.http_url, await operator_token(server))
    product, b = await tea_on_shelf(op, stock=50)
    room = f"{b['app']}/{b['stream']}"
    push = await op.call("GET", f"/api/broadcasts/{b['id']}/push")
    pub = await start_publisher(push["url"], clip, loop=True)
    procs = [pub]
    try:
        await wait_for(lambda: _is(op, b["id"], "live"), 30, step=0.2)
        yield {
            "server": server,
            "op": op,
            "broadcast": b,
            "room": room,
            "product": product,
            "push": push["url"],
            "clip": clip,
            "procs": procs,
            "url": f"{server.http_url}/watch/{room}",
        }
    finally:
        for p in procs:
            await stop(p)
        await op.session.close()


async def tea_on_shelf(
    op: Operator, stock: int, price: int = 3900
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A product (one SKU at ``price`` fen, ``stock`` units) and a broadcast scheduled now that has
    it on its shelf: the product and the broadcast."""
    product = await op.call(
        "POST",
        "/api/products",
        {
            "title": "Spring tea 100g",
            "description": "first flush",
            "skus": [
                {"code": "TEA-100", "specs": {"size": "100g"}, "price_fen": price, "stock": stock}
            ],
        },
        ok=201,
    )
    b = await op.call(
        "POST",
        "/api/broadcasts",
        {
            "title": "Tea tasting",
            "scheduled_start": datetime.now(UTC).isoformat(),
            "product_ids": [product["id"]],
        },
        ok=201,
    )
    shelf = {"items": [{"product_id": product["id"], "on_shelf": True}]}
    await op.call("PUT", f"/api/broadcasts/{b['id']}/shelf", shelf)
    return product, b


async def _is(op: Operator, bid: int, state: str) -> bool:
    return await op.state(bid) == state


async def _browser(pw: Any) -> Any:
    return await pw.chromium.launch(
        executable_path=chromium_executable(),
        args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
        headless=True,
    )


async def _viewer(browser: Any, url: str, log: list[str]) -> Any:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    await page.goto(url)
    return page


async def _playing(page: Any) -> None:
    """Frames are decoded and the playhead moves (a second of media at least)."""
    await wait_for(
        lambda: page.evaluate("window.berrylive?.player?.state === 'playing'"), 40, step=0.2
    )
    start = await page.evaluate("({f: berrylive.player.frames, t: video.currentTime})")

    async def advanced() -> bool:
        now = await page.evaluate("({f: berrylive.player.frames, t: video.currentTime})")
        return bool(now["f"] >= start["f"] + 30 and now["t"] >= start["t"] + 1.0)

    await wait_for(advanced, 30, step=0.2)


async def _text_in(page: Any, selector: str, text: str) -> bool:
    return text in (await page.locator(selector).inner_text())


async def test_watch_chat_buy_win(show: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    op: Operator = show["op"]
    bid = show["broadcast"]["id"]
    log: list[str] = []
    async with async_playwright() as pw:
        browser = await _browser(pw)
        try:
            # A: whatever the page picks (this clip has B-frames: WebRTC through the
            # stream's one transcode); B: WS-FLV through mpegts.js, the last resort;
            # C: LL-HLS through hls.js (closed once it plays)
            a = await _viewer(browser, show["url"], log)
            b = await _viewer(browser, show["url"] + "?player=flv", log)
            c = await _viewer(browser, show["url"] + "?player=hls", log)
            for page, way in ((a, "whep"), (b, "flv"), (c, "hls")):
                await _playing(page)
                assert await page.evaluate("document.body.dataset.way") == way, log[-20:]
            await c.context.close()
            # both joined the room with their own anonymous users
            await wait_for(lambda: a.evaluate("document.body.dataset.room === 'joined'"), 20)
            await wait_for(lambda: b.evaluate("document.body.dataset.room === 'joined'"), 20)
            for page in (a, b):  # the online count: both viewers (and no one else)
                await wait_for(lambda p=page: _text_in(p, "#online", "2"), 20)
            uid_a = await a.evaluate("berrylive.viewer.user.uid")
            uid_b = await b.evaluate("berrylive.viewer.user.uid")
            assert uid_a != uid_b

            # a comment from A appears at B (in the list and as a bullet over the video)
            text = f"hello {uuid.uuid4().hex[:8]}"
            await a.fill("#comment-input", text)
            sent = time.monotonic()
            await a.press("#comment-input", "Enter")
            await wait_for(lambda: _text_in(b, "#chat-list", text), 15, step=0.05)
            print(f"comment from A seen at B after {time.monotonic() - sent:.2f} s (not asserted)")
            await wait_for(lambda: b.locator("#danmaku .bullet", has_text=text).count(), 5)

            # likes: B taps three times, A's counter shows them
            for _ in range(3):
                await b.click("#like")
            await wait_for(lambda: _likes_at_least(a, 3), 15)

            # the operator pushes the card: it appears with the product and its price
            card = {"product_id": show["product"]["id"]}
            await op.call("POST", f"/api/broadcasts/{bid}/card", card, ok=201)
            for page in (a, b):
                await wait_for(lambda p=page: p.locator("#card").is_visible(), 15)
                await wait_for(lambda p=page: _text_in(p, "#card", "Spring tea 100g"), 10)
            assert "39.00" in await b.locator("#card-price").inner_text()

            # B buys from the card: recipient asked, order placed, paid through the simulator
            await _buy_from_card(b, "张三", "13800001234", "上海市徐汇区漕溪北路 1 号")
            orders = await op.call("GET", f"/api/orders?broadcast_id={bid}")
            mine = [o for o in orders["items"] if o["user_id"] == uid_b]
            assert [o["state"] for o in mine] == ["paid"], orders
            assert mine[0]["amount_fen"] == 3900
            await _recipient_kept(op, b, mine[0], ("张*", "138****1234"))
            await b.click("#sheet-close")

            # a button lottery: A enters, the operator draws, A sees the winner (A) and checks it
            lot = await op.call(
                "POST",
                "/api/danmaku/lotteries",
                {
                    "room": show["room"],
                    "title": "Tea set",
                    "prizes": [{"name": "Tea set", "stock": 1, "sku": "TEA-100"}],
                    "entry": "button",
                    "window_s": 120,
                    "mode": "timed",
                },
                ok=201,
            )
            await a.locator("#lottery").wait_for(timeout=15_000)
            await a.click("#lottery-enter")
            await wait_for(lambda: _text_in(a, "#lottery-status", "已参与"), 15)
            await op.call("POST", f"/api/danmaku/lotteries/{lot['lottery_id']}/draw")
            await a.locator("#lottery-result").wait_for(timeout=15_000)
            winners = await a.locator("#lottery-winners").inner_text()
            nick_a = await a.evaluate("berrylive.viewer.user.nick")
            assert nick_a in winners
            assert "恭喜中奖" in await a.locator("#sheet-body").inner_text()
            await b.locator("#lottery-result").wait_for(timeout=15_000)
            assert "未中奖" in await b.locator("#sheet-body").inner_text()
            assert await a.get_attribute("#lottery-verify-link", "href") == (
                f"/api/danmaku/lotteries/{lot['lottery_id']}?entrants=1"
            )
            await a.click("#lottery-verify")
            await wait_for(lambda: _text_in(a, "#lottery-verify-result", "✓"), 15)
            await _prize_shipped_to(op, a, uid_a)
            await a.click("#sheet-close")

            ARTIFACTS.mkdir(exist_ok=True)
            await a.screenshot(path=str(ARTIFACTS / "viewer-phone.png"))
            await b.screenshot(path=str(ARTIFACTS / "viewer-phone-buyer.png"))
            errors = [line for line in log if line.startswith("pageerror")]
            assert errors == [], errors
        finally:
            await browser.close()


async def _recipient_kept(op: Operator, page: Any, order: dict[str, Any], masked: Any) -> None:
    """The order carries the recipient, masked (contracts.md), and the buyer's address book
    has it; a server without the address book yet: the page kept it in the browser."""
    spec = await op.call("GET", "/api/openapi.json")
    print("recipient: the server has the address book:", "/api/me/addresses" in spec["paths"])
    if "/api/me/addresses" in spec["paths"]:
        assert (order["recipient"]["name"], order["recipient"]["phone"]) == masked, order
        token = await page.evaluate("berrylive.viewer.token")
        async with (
            aiohttp.ClientSession(headers={"X-Viewer-Token": token}) as s,
            s.get(op.base + "/api/me/addresses") as r,
        ):
            assert r.status == 200, await r.text()
            book = await r.json()
        items = book if isinstance(book, list) else book["items"]
        assert len(items) == 1, book
    else:
        kept = await page.evaluate(
            "localStorage.getItem('berrylive:recipient:' + berrylive.viewer.user.uid)"
        )
        assert kept and masked[0][0] in kept


async def _prize_shipped_to(op: Operator, page: Any, uid: str) -> None:
    """The shop made the prize a zero-price order of the SKU for the winner; where the server
    keeps recipients, the page asks the winner where to ship it and the order has it."""

    async def prize_order() -> dict[str, Any] | None:
        found = await op.call("GET", f"/api/orders?user_id={uid}")
        return next((o for o in found["items"] if o["kind"] == "prize"), None)

    await wait_for(lambda: _truthy(prize_order()), 15)
    spec = await op.call("GET", "/api/openapi.json")
    print(
        "prize: the server keeps recipients:", "/api/orders/{order_id}/recipient" in spec["paths"]
    )
    if "/api/orders/{order_id}/recipient" in spec["paths"]:
        await page.locator("#prize-box").wait_for(timeout=20_000)
        await page.fill("#rc-name", "王五")
        await page.fill("#rc-phone", "13700009999")
        await page.fill("#rc-address", "杭州市西湖区文三路 90 号")
        await page.click("#prize-claim")
        await page.locator("#prize-state[data-state='claimed']").wait_for(timeout=15_000)
        order = await prize_order()
        assert order is not None and order["recipient"]["name"] == "王*", order
    else:
        order = await prize_order()
        assert order is not None and order["state"] == "paid" and order["amount_fen"] == 0


async def _buy_from_card(page: Any, name: str, phone: str, address: str) -> None:
    """Buy from the card on ``page``: the recipient form filled, the order placed and paid
    through the simulator, until the page shows it paid."""
    await page.click("#card-buy")
    await checkout(page, name, phone, address)


async def checkout(page: Any, name: str, phone: str, address: str) -> None:
    """On the buy sheet open on ``page``: fill in the recipient, place the order and pay it
    through the simulator, until the page shows it paid."""
    await page.fill("#rc-name", name)
    await page.fill("#rc-phone", phone)
    await page.fill("#rc-address", address)
    await page.click("#buy-confirm")
    await page.locator("#pay-confirm").wait_for(timeout=20_000)
    await page.click("#pay-confirm")
    await page.locator("#order-state[data-state='paid']").wait_for(timeout=30_000)


async def _truthy(value: Any) -> bool:
    return bool(await value)


async def _likes_at_least(page: Any, n: int) -> bool:
    return int(await page.locator("#like-total").inner_text()) >= n


async def test_flash_sale_away_and_back_then_replay(show: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    op: Operator = show["op"]
    bid = show["broadcast"]["id"]
    sku = show["product"]["skus"][0]
    log: list[str] = []
    async with async_playwright() as pw:
        browser = await _browser(pw)
        try:
            # the viewer comes through a sharer's link (分享员): the sale is credited to them
            spec = await op.call("GET", "/api/openapi.json")
            sharing = "/api/broadcasts/{broadcast_id}/share-links" in spec["paths"]
            url = show["url"]
            if sharing:
                await op.call("POST", "/api/sharers", {"user_id": "sharer-7", "name": "Lin"}, 201)
                link = await op.call(
                    "POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": "sharer-7"}, 201
                )
                assert link["url"].startswith(show["url"] + "?share="), link
                url = link["url"]
            page = await _viewer(browser, url, log)
            await _playing(page)
            await wait_for(lambda: page.evaluate("document.body.dataset.room === 'joined'"), 20)
            # sharing as a viewer who is not a sharer: the page itself
            await page.click("#share")
            await wait_for(lambda: page.evaluate("!!document.getElementById('share').dataset.url"))
            assert await page.get_attribute("#share", "data-url") == show["url"]

            # a flash sale on the card: sale price, countdown, remaining stock; a buy takes one
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            sale = await op.call(
                "POST",
                "/api/flash-sales",
                {
                    "broadcast_id": bid,
                    "sku_id": sku["id"],
                    "sale_price_fen": 1990,
                    "sale_stock": 5,
                    "per_user_limit": 1,
                    "starts_at": now_ms,
                    "ends_at": now_ms + 600_000,
                },
                ok=201,
            )
            card = {"product_id": show["product"]["id"], "flash_sale_id": sale["id"]}
            await op.call("POST", f"/api/broadcasts/{bid}/card", card, ok=201)
            await page.locator("#card-flash").wait_for(timeout=15_000)
            await wait_for(lambda: _text_in(page, "#card-remaining", "5"), 10)
            await wait_for(lambda: _text_in(page, "#card-countdown", "秒杀"), 10)
            assert "19.90" in await page.locator("#card-price").inner_text()
            await _buy_from_card(page, "李四", "13900005678", "北京市海淀区中关村大街 27 号")
            uid = await page.evaluate("berrylive.viewer.user.uid")
            orders = await op.call("GET", f"/api/orders?broadcast_id={bid}")
            mine = [o for o in orders["items"] if o["user_id"] == uid]
            assert [(o["state"], o["flash_sale_id"], o["amount_fen"]) for o in mine] == [
                ("paid", sale["id"], 1990)
            ], orders
            await _recipient_kept(op, page, mine[0], ("李*", "139****5678"))
            print("sharers: the server credits share links:", sharing)
            if sharing:
                assert mine[0]["sharer_id"] == "sharer-7", mine[0]
            else:
                assert mine[0].get("sharer_id") is None
            await page.click("#sheet-close")
            await wait_for(lambda: _text_in(page, "#card-remaining", "4"), 15)

            # a keyword lottery: the page's button comments the keyword, which enters
            lot = await op.call(
                "POST",
                "/api/danmaku/lotteries",
                {
                    "room": show["room"],
                    "title": "Mug",
                    "prizes": [{"name": "Mug", "stock": 1}],
                    "entry": "keyword",
                    "keyword": "我要抽奖",
                    "window_s": 120,
                    "mode": "timed",
                },
                ok=201,
            )
            await wait_for(lambda: _text_in(page, "#lottery-how", "我要抽奖"), 15)
            await page.click("#lottery-enter")
            await wait_for(lambda: _text_in(page, "#lottery-status", "已参与"), 15)
            await wait_for(lambda: _text_in(page, "#chat-list", "我要抽奖"), 15)
            audit = await op.call("GET", f"/api/danmaku/lotteries/{lot['lottery_id']}?entrants=1")
            assert audit["entrant_count"] == 1, audit

            # the publisher goes away: the page says so; it comes back: the page plays again
            await stop(show["procs"][0])
            await page.locator("#away").wait_for(timeout=30_000)
            assert "主播马上回来" in await page.locator("#away").inner_text()
            show["procs"].append(await start_publisher(show["push"], show["clip"], loop=True))
            await _playing(page)
            assert await page.locator("#away").is_hidden()

            # the broadcast ends: the replay plays, with the product's clip and its buy button
            await op.call("POST", f"/api/broadcasts/{bid}/end", {"reason": "done"})
            item = page.locator(f"#clips li[data-product-id='{show['product']['id']}']")
            await item.wait_for(timeout=60_000)
            assert "Spring tea 100g" in await item.inner_text()
            await wait_for(lambda: page.evaluate("video.currentTime > 0.5"), 30, step=0.2)
            await item.locator("button.buy").click()
            await page.locator("#buy-confirm").wait_for(timeout=10_000)
            assert await page.locator("#recipient-saved").is_visible()  # asked once only
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "viewer-phone-replay.png"))
            await page.click("#buy-confirm")
            await page.locator("#pay-confirm").wait_for(timeout=20_000)
            await page.click("#sheet-close")  # not now: paid later from the bag

            # the bag: the shelf, and the viewer's orders with the unpaid one to pay
            await page.click("#bag")
            shelf_item = f"#shelf-list li[data-product-id='{show['product']['id']}']"
            await page.locator(shelf_item).wait_for(timeout=10_000)
            assert "Spring tea 100g" in await page.locator(shelf_item).inner_text()
            pending = page.locator("#my-orders li[data-state='pending_payment']")
            await pending.wait_for(timeout=10_000)
            assert await page.locator("#my-orders li[data-state='paid']").count() == 1
            await page.screenshot(path=str(ARTIFACTS / "viewer-phone-bag.png"))
            await pending.locator("button").click()
            await page.locator("#pay-confirm").wait_for(timeout=20_000)
            await page.click("#pay-confirm")
            await page.locator("#order-state[data-state='paid']").wait_for(timeout=30_000)
            orders = await op.call("GET", f"/api/orders?broadcast_id={bid}")
            states = sorted(o["state"] for o in orders["items"] if o["user_id"] == uid)
            assert states == ["paid", "paid"], orders
            errors = [line for line in log if line.startswith("pageerror")]
            assert errors == [], errors
        finally:
            await browser.close()


async def test_site_token_and_whep_when_offered(server_factory: Any, clip_no_bframes: Path) -> None:
    """The production way in: the site's backend mints its user's token
    (``/api/broadcasts/{id}/viewer-token``, operator API token) and opens the page with
    ``#token=``; anonymous tokens are off. The stream has no B-frames, so the page plays it
    over WHEP when ``OPTIONS /whep/...`` answers (the WebRTC package), else over LL-HLS."""
    from playwright.async_api import async_playwright

    server = await server_factory()  # viewer.anonymous_tokens off (the default)
    op = Operator(server.http_url, await operator_token(server))
    procs: list[Any] = []
    try:
        b = await op.call(
            "POST",
            "/api/broadcasts",
            {"title": "Site show", "scheduled_start": datetime.now(UTC).isoformat()},
            ok=201,
        )
        room = f"{b['app']}/{b['stream']}"
        push = await op.call("GET", f"/api/broadcasts/{b['id']}/push")
        minted = await op.call(
            "POST",
            f"/api/broadcasts/{b['id']}/viewer-token",
            {"user_id": "site-user-42", "nick": "Mei"},
        )
        async with aiohttp.ClientSession() as s:
            async with s.options(f"{server.http_url}/whep/{room}") as r:
                offered = r.status < 300
        log: list[str] = []
        async with async_playwright() as pw:
            browser = await _browser(pw)
            try:
                # opened before the show: it says so, and starts by itself when it goes live
                page = await _viewer(
                    browser, f"{server.http_url}/watch/{room}#token={minted['token']}", log
                )
                await page.locator("#away").wait_for(timeout=20_000)
                assert "直播即将开始" in await page.locator("#away").inner_text()
                await page.click("#remind")  # the go-live reminder, as this site user
                await wait_for(lambda: _text_in(page, "#remind", "已预约"), 15)
                assert (await op.call("GET", f"/api/broadcasts/{b['id']}"))["reminder_count"] == 1
                procs.append(await start_publisher(push["url"], clip_no_bframes, loop=True))
                await _playing(page)
                assert await page.locator("#away").is_hidden()
                way = await page.evaluate("document.body.dataset.way")
                print(f"WHEP offered: {offered}; the page played over {way}")
                assert way == ("whep" if offered else "hls"), (offered, way, log[-20:])
                assert await page.evaluate("berrylive.viewer.user") == {
                    "uid": "site-user-42",
                    "nick": "Mei",
                }
                assert "token" not in await page.evaluate("location.href")  # out of the bar
                await wait_for(lambda: page.evaluate("document.body.dataset.room === 'joined'"), 20)
                await page.fill("#comment-input", "from the site")
                await page.press("#comment-input", "Enter")
                line = page.locator("#chat-list li", has_text="from the site")
                await line.wait_for(timeout=15_000)
                assert "Mei" in await line.inner_text()
                # away and back on this way too (over WebRTC the playhead runs on over a
                # frozen picture: the page judges by frames)
                await stop(procs[0])
                await page.locator("#away").wait_for(timeout=30_000)
                procs.append(await start_publisher(push["url"], clip_no_bframes, loop=True))
                await _playing(page)
                assert await page.evaluate("document.body.dataset.way") == way
            finally:
                await browser.close()
    finally:
        for p in procs:
            await stop(p)
        await op.session.close()
