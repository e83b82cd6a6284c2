"""The operator console in a real browser: headless Chromium driven by Playwright.

Log in, create a broadcast, copy its push URL, push with ffmpeg, watch the page turn
``live`` in place, play the preview, take a screenshot (kept under the test's tmp dir and,
for people, at ``/tmp/berrylive-console.png``). The browser comes from ``tests/browser.py``.
"""

from __future__ import annotations

import shutil

import aiohttp
import pytest

from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.control.conftest import PASSWORD, make_staff
from tests.control.publisher import start_ffmpeg, stop

pytestmark = pytest.mark.slow


async def test_console_login_create_go_live_screenshot(control_env, server_factory, tmp_path):
    from playwright.async_api import async_playwright, expect

    server = await server_factory(control=control_env)
    async with aiohttp.ClientSession() as session:
        await make_staff(server, session)
    base = server.http_url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1100})
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/console/")
            # sign in (a wrong password first: the error is shown)
            await page.fill("input[name=username]", "operator1")
            await page.fill("input[name=password]", "wrong password")
            await page.click("button[type=submit]")
            await expect(page.locator("#login-error")).to_contain_text("wrong user name")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("#who")).to_contain_text("operator")
            # create a broadcast
            await page.click("a[data-nav=new]")
            await page.fill("input[name=title]", "Tea harvest live")
            await page.select_option("select[name=anchor]", label="anchor one (anchor1)")
            await page.fill("input[name=products]", "101, 102")
            # the form proposes the next full hour; this show starts now, so its push URL
            # is already open (it opens push_lead before the start)
            await page.evaluate(
                """() => {
                    const local = (ms) => {
                        const d = new Date(ms);
                        d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
                        return d.toISOString().slice(0, 16);
                    };
                    document.querySelector('input[name=start]').value = local(Date.now() + 60e3);
                    const end = Date.now() + 3 * 3600e3;
                    document.querySelector("input[name=end]").value = local(end);
                }"""
            )
            await page.click("#new-form button[type=submit]")
            await expect(page.locator("#state [data-state]")).to_have_attribute(
                "data-state", "scheduled"
            )
            await expect(page.locator("#qr img")).to_be_visible()
            push_url = await page.input_value("#push-url")
            assert push_url.startswith("rtmp://127.0.0.1:")
            await page.click("#copy-push")
            copied = await page.evaluate("navigator.clipboard.readText()")
            assert copied == push_url
            # a test publisher pushes with that URL: the page turns live in place
            proc = await start_ffmpeg(push_url)
            try:
                await expect(page.locator("#state [data-state]")).to_have_attribute(
                    "data-state", "live", timeout=20000
                )
                await expect(page.locator("#fig-bitrate_in")).not_to_have_text("—", timeout=15000)
                await page.click("#preview-start")
                await expect(page.locator("#preview-status")).to_contain_text(
                    "Playing", timeout=10000
                )
                # a decoded frame in the preview (not a fixed wait) before the picture
                await page.wait_for_function(
                    "() => document.querySelector('#preview').readyState >= 2", timeout=15000
                )
                shot = tmp_path / "console.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10000
                shutil.copy(shot, "/tmp/berrylive-console.png")
            finally:
                await stop(proc)
            await expect(page.locator("#state [data-state]")).to_have_attribute(
                "data-state", "ended", timeout=20000
            )
            # the schedule lists it with its state
            await page.click("a[data-nav=schedule]")
            await expect(page.locator("#schedule-body")).to_contain_text("Tea harvest live")
            assert not errors, errors
        finally:
            await browser.close()
