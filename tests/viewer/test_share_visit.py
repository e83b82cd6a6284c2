"""A share link opened in real headless Chromium by a viewer without a viewer token (the
site has not signed them in; anonymous tokens off): the visit counts for the sharer, once
per browser (a reload counts nothing), another browser counts again, and the same browser
once signed in (``#token=``) counts nothing new but is now credited (its orders go to the
sharer). Visits per sharer from ``GET /api/broadcasts/{id}/sharers``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.mediautil import operator_token
from tests.viewer.test_browser import PHONE, Operator, _browser


async def _visits(op: Operator, bid: int, sharer: str) -> int:
    report = await op.call("GET", f"/api/broadcasts/{bid}/sharers")
    return next((int(i["visits"]) for i in report["items"] if i["sharer_id"] == sharer), 0)


async def _open(context: Any, url: str, log: list[str]) -> dict[str, Any]:
    """Open ``url`` in a new tab of ``context``; the page's share-visit answer."""
    page = await context.new_page()
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    async with page.expect_response(
        lambda r: "/share-visits" in r.url and r.request.method == "POST", timeout=20000
    ) as info:
        await page.goto(url)
    resp = await info.value
    assert resp.status == 200, (resp.status, await resp.text(), log)
    body: dict[str, Any] = await resp.json()
    await page.close()
    return body


async def test_a_share_visit_without_a_token_counts_once_per_browser(server_factory: Any) -> None:
    from playwright.async_api import async_playwright

    server = await server_factory()  # viewer.anonymous_tokens off (the default)
    op = Operator(server.http_url, await operator_token(server))
    try:
        b = await op.call(
            "POST",
            "/api/broadcasts",
            {"title": "Tea tasting", "scheduled_start": datetime.now(UTC).isoformat()},
            ok=201,
        )
        bid = b["id"]
        await op.call("POST", "/api/sharers", {"user_id": "sharer-9", "name": "Lin"}, 201)
        link = await op.call(
            "POST", f"/api/broadcasts/{bid}/share-links", {"sharer_id": "sharer-9"}, 201
        )
        assert await _visits(op, bid, "sharer-9") == 0
        log: list[str] = []
        async with async_playwright() as pw:
            browser = await _browser(pw)
            try:
                one = await browser.new_context(viewport=PHONE, is_mobile=True)
                first = await _open(one, link["url"], log)
                assert (first["counted"], first["credited_to"]) == (True, None), first
                assert await _visits(op, bid, "sharer-9") == 1
                # the same browser again (a reload, another tab): nothing new
                again = await _open(one, link["url"], log)
                assert (again["counted"], again["not_counted"]) == (False, "seen"), again
                assert await _visits(op, bid, "sharer-9") == 1
                # another browser is another visitor
                two = await browser.new_context(viewport=PHONE, is_mobile=True)
                assert (await _open(two, link["url"], log))["counted"] is True
                assert await _visits(op, bid, "sharer-9") == 2
                # the first browser signed in by the site: no new visit, now credited
                minted = await op.call(
                    "POST",
                    f"/api/broadcasts/{bid}/viewer-token",
                    {"user_id": "site-user-7", "nick": "Mei"},
                )
                signed = await _open(one, f"{link['url']}#token={minted['token']}", log)
                assert (signed["counted"], signed["credited_to"]) == (False, "sharer-9"), signed
                assert await _visits(op, bid, "sharer-9") == 2
            finally:
                await browser.close()
        assert not [x for x in log if x.startswith("pageerror")], log
    finally:
        await op.session.close()
