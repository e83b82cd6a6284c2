"""Webhooks against a real HTTP subscriber: HMAC signature, retries with backoff,
idempotency id stable across retries, delivery log, failure counted in /metrics."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from control import webhooks as wh


async def start_subscriber(fail_first: int):
    received: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        received.append({"headers": dict(request.headers), "body": body, "at": time.monotonic()})
        if len(received) <= fail_first:
            return web.Response(status=500, text="not now")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # public: the bound (host, port) of each site
    return runner, f"http://127.0.0.1:{port}/hook", received


async def wait_for(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_signed_retried_logged(staff) -> None:
    runner, url, received = await start_subscriber(fail_first=2)
    try:
        secret = "s" * 32
        status, hook = await staff.api.call(
            "POST",
            "/api/webhooks",
            staff.operator,
            json={"url": url, "events": ["broadcast.*"], "secret": secret},
        )
        assert status == 201 and hook["secret"] == secret
        b = await staff.create_broadcast()
        await wait_for(lambda: len(received) >= 3)
        _first, *_, last = received[:3]
        for r in received[:3]:
            assert r["headers"]["X-Berrylive-Event"] == "broadcast.created"
            assert wh.verify(secret, r["headers"]["X-Berrylive-Signature"], r["body"], time.time())
            assert not wh.verify(
                "wrong" * 8, r["headers"]["X-Berrylive-Signature"], r["body"], time.time()
            )
        ids = {r["headers"]["X-Berrylive-Event-Id"] for r in received[:3]}
        assert len(ids) == 1  # the same idempotency id on every retry
        assert received[0]["headers"]["Idempotency-Key"] == ids.pop()
        # exponential backoff: the second gap is longer than the first (0.2 s, then 0.4 s)
        gap1 = received[1]["at"] - received[0]["at"]
        gap2 = received[2]["at"] - received[1]["at"]
        assert gap1 >= 0.15 and gap2 >= 0.3, (gap1, gap2)
        payload = json.loads(last["body"])
        assert payload["topic"] == "broadcast.created" and payload["data"]["id"] == b["id"]
        status, log = await staff.api.call(
            "GET", f"/api/webhooks/{hook['id']}/deliveries", staff.operator
        )
        assert status == 200
        created = next(d for d in log["items"] if d["topic"] == "broadcast.created")
        assert created["status"] == "delivered" and created["attempts"] == 3
        assert created["last_status"] == 200
    finally:
        await runner.cleanup()


async def test_gives_up_and_counts_failures(staff) -> None:
    runner, url, received = await start_subscriber(fail_first=1000)
    try:
        status, hook = await staff.api.call(
            "POST", "/api/webhooks", staff.operator, json={"url": url, "events": ["ping"]}
        )
        assert status == 201 and len(hook["secret"]) >= 32
        status, _ping = await staff.api.call(
            "POST", f"/api/webhooks/{hook['id']}/ping", staff.operator
        )
        assert status == 202
        await wait_for(lambda: len(received) >= 3)

        async def failed() -> bool:
            _, log = await staff.api.call(
                "GET", f"/api/webhooks/{hook['id']}/deliveries?status=failed", staff.operator
            )
            return log["total"] == 1

        deadline = time.monotonic() + 10
        while not await failed():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # max attempts (3 in tests), then no more: the record is final, nothing scheduled
        _, log = await staff.api.call(
            "GET", f"/api/webhooks/{hook['id']}/deliveries?status=failed", staff.operator
        )
        (gave_up,) = log["items"]
        assert gave_up["attempts"] == 3 and gave_up["next_attempt_at"] is None
        assert len(received) == 3
        status, metrics = await staff.api.call("GET", "/metrics")
        assert b'berrylive_webhook_failures_total{final="true"} 1.0' in metrics
        assert b'berrylive_webhook_failures_total{final="false"} 3.0' in metrics
    finally:
        await runner.cleanup()


async def test_webhook_validation(staff) -> None:
    for body in (
        {"url": "ftp://x.example/hook", "events": ["broadcast.*"]},
        {"url": "http://127.0.0.1/hook", "events": []},
        {"url": "http://127.0.0.1/hook", "events": ["Bad Topic"]},
        {"url": "http://127.0.0.1/hook", "events": ["*"], "secret": "short"},
        {"url": "http://127.0.0.1/hook", "events": ["*"], "extra": 1},
    ):
        status, err = await staff.api.call("POST", "/api/webhooks", staff.operator, json=body)
        assert status == 400, body
        assert set(err["error"]) >= {"code", "message"}


async def test_redirects_are_not_followed(staff) -> None:
    """A receiver answering 307 to a loopback address never gets the POST sent there."""
    inside: list[bytes] = []

    async def redirect(request: web.Request) -> web.Response:
        port = request.url.port
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{port}/internal/admin")

    async def internal(request: web.Request) -> web.Response:
        inside.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/internal/admin", internal)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        status, hook = await staff.api.call(
            "POST", "/api/webhooks", staff.operator, json={"url": url, "events": ["ping"]}
        )
        assert status == 201
        status, _ = await staff.api.call("POST", f"/api/webhooks/{hook['id']}/ping", staff.operator)
        assert status == 202

        async def attempted() -> dict | None:
            _, log = await staff.api.call(
                "GET", f"/api/webhooks/{hook['id']}/deliveries", staff.operator
            )
            tried = [d for d in log["items"] if d["attempts"] >= 1]
            return tried[0] if tried else None

        deadline = time.monotonic() + 10
        while (delivery := await attempted()) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert delivery["last_status"] == 307 and delivery["status"] != "delivered", delivery
        assert "not followed" in delivery["last_error"]
        assert inside == []
    finally:
        await runner.cleanup()
