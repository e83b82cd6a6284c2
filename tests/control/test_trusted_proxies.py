"""A full server behind a real reverse proxy (``server.trusted_proxies``).

The proxy is a small aiohttp server written here: it listens on 127.0.0.1, forwards every
request (and WebSocket) to berrylive from 127.0.0.1, and appends the address it received
the request from to ``X-Forwarded-For``, as nginx's ``proxy_add_x_forwarded_for`` does.
Clients behind it connect from 127.0.0.2 and 127.0.0.3, so each has its own address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from multidict import CIMultiDict

from control.accounts import Role
from control.api import CONTROL
from danmaku.service import DANMAKU
from relay.http import REGISTRY
from tests.conftest import RunningServer
from tests.control.conftest import CONTROL_TEST_SETTINGS, PASSWORD
from tests.danmaku.helpers import NS, token, wait_until
from tests.mediautil import make_clip, start_publisher, stop, wait_for

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
}
ALICE, BOB = "127.0.0.2", "127.0.0.3"  # two clients behind the proxy
TRUSTED = {"trusted_proxies": ("127.0.0.1/32",)}


def _forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    out = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    prior = ", ".join(request.headers.getall("X-Forwarded-For", ()))
    out.popall("X-Forwarded-For", None)
    out["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else str(request.remote)
    out["X-Forwarded-Proto"] = request.scheme
    return out


@contextlib.asynccontextmanager
async def reverse_proxy(upstream: str) -> AsyncIterator[str]:
    """A real HTTP/WebSocket reverse proxy in front of ``upstream``; yields its base URL."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0)), auto_decompress=False
    )

    async def websocket(request: web.Request) -> web.StreamResponse:
        front = web.WebSocketResponse()
        await front.prepare(request)
        async with session.ws_connect(
            upstream + request.path_qs, headers=_forwarded_headers(request)
        ) as back:

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                await dst.close()

            tasks = [
                asyncio.ensure_future(pump(front, back)),
                asyncio.ensure_future(pump(back, front)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
        return front

    async def stream(request: web.Request) -> web.StreamResponse:
        """A long response (HTTP-FLV) passed on as it comes, as nginx does without buffering."""
        front = web.StreamResponse()
        async with session.get(
            upstream + request.path_qs, headers=_forwarded_headers(request)
        ) as back:
            front.set_status(back.status)
            await front.prepare(request)
            async for chunk in back.content.iter_any():
                await front.write(chunk)
        return front

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await websocket(request)
        if request.path.endswith(".flv"):
            return await stream(request)
        body = await request.read()
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=_forwarded_headers(request),
            data=body or None,
            allow_redirects=False,
        ) as r:
            data = await r.read()
            headers = CIMultiDict(
                (k, v) for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP
            )
            return web.Response(status=r.status, body=data, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    # a client that leaves cancels its forwarded request (a pending long-poll, say)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


def client_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def _login(
    session: aiohttp.ClientSession, base: str, password: str, forged: str | None = None
) -> int:
    headers = {"X-Forwarded-For": forged} if forged else {}
    async with session.post(
        base + "/api/auth/login",
        json={"username": "anchor1", "password": password},
        headers=headers,
    ) as r:
        await r.read()
        return r.status


async def _server(server_factory: Callable[..., Any], **sections: Any) -> RunningServer:
    server: RunningServer = await server_factory(
        control={**CONTROL_TEST_SETTINGS, **sections.pop("control", {})}, **sections
    )
    accounts = server.app[CONTROL].accounts
    assert accounts is not None
    await accounts.create_user("anchor1", PASSWORD, Role.ANCHOR, "anchor one")
    return server


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_login_limits_count_each_client_behind_a_trusted_proxy(
    server_factory: Callable[..., Any], trusted: bool
) -> None:
    """login_max_failures (5) is per account and client address. Behind an untrusted proxy
    every client is the proxy; behind a trusted one each is itself, and what a client writes
    into X-Forwarded-For itself never makes it someone else."""
    server = await _server(server_factory, server=TRUSTED if trusted else {})
    async with reverse_proxy(server.http_url) as proxy:
        async with client_from(ALICE) as alice, client_from(BOB) as bob:
            # Alice guesses, claiming a new address each time (the leftmost entry)
            for i in range(5):
                assert await _login(alice, proxy, f"guess-{i}", forged=f"203.0.113.{i}") == 401
            assert await _login(alice, proxy, PASSWORD, forged="198.51.100.1") == 429
            # Bob, another client behind the same proxy: himself only when it is trusted
            assert await _login(bob, proxy, PASSWORD) == (200 if trusted else 429)
            assert await _login(bob, proxy, PASSWORD, forged="198.51.100.2") == (
                200 if trusted else 429
            )
            # straight to the server, as herself: her guesses were hers only behind a trusted
            # proxy (behind an untrusted one they were charged to the proxy's address)
            direct = await _login(alice, server.http_url, PASSWORD, forged="192.0.2.1")
            assert direct == (429 if trusted else 200)


async def _metrics(session: aiohttp.ClientSession, base: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    async with session.get(base + "/metrics", headers=headers) as r:
        await r.read()
        return r.status


async def test_metrics_allow_sees_the_client_and_ignores_what_it_cannot_trust(
    server_factory: Callable[..., Any],
) -> None:
    """``control.metrics_allow`` lets only Alice in: which requests are Alice?"""
    server = await _server(
        server_factory, server=TRUSTED, control={"metrics_allow": (f"{ALICE}/32",)}
    )
    base = server.http_url
    async with reverse_proxy(base) as proxy:
        async with (
            client_from(ALICE) as alice,
            client_from(BOB) as bob,
            client_from("127.0.0.1") as the_proxy_host,
        ):
            assert await _metrics(alice, proxy) == 200
            assert await _metrics(bob, proxy) == 403
            assert await _metrics(bob, proxy, xff=ALICE) == 403  # a forged leftmost entry
            assert await _metrics(alice, base) == 200  # no proxy: the peer itself
            assert await _metrics(bob, base, xff=ALICE) == 403  # an untrusted peer's header
            # a trusted peer's header is believed when it can be read...
            assert await _metrics(the_proxy_host, base, xff=ALICE) == 200
            assert await _metrics(the_proxy_host, base, xff=f"[::ffff:{ALICE}]:50123") == 200
            # ...and ignored as a whole when it cannot: the peer (127.0.0.1) is the client
            for garbage in ("", "garbage", f"{ALICE}, garbage", f"{ALICE}:99999", "unknown"):
                assert await _metrics(the_proxy_host, base, xff=garbage) == 403, garbage
            assert await _metrics(the_proxy_host, base) == 403


async def test_nobody_trusted_by_default(server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory, control={"metrics_allow": (f"{ALICE}/32",)})
    assert server.config.server.trusted_proxies == ()
    async with reverse_proxy(server.http_url) as proxy:
        async with client_from(ALICE) as alice, client_from("127.0.0.1") as local:
            assert await _metrics(alice, proxy) == 403  # the server sees the proxy
            assert await _metrics(local, server.http_url, xff=ALICE) == 403
            assert await _metrics(alice, server.http_url) == 200


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_danmaku_sees_the_client_behind_the_proxy(
    server_factory: Callable[..., Any], transport: str
) -> None:
    """A viewer's address in the danmaku hub (the lottery's per-address limit uses it), over
    our own WebSocket path and python-socketio's long-polling."""
    server = await server_factory(server=TRUSTED)
    async with reverse_proxy(server.http_url) as proxy, client_from(BOB) as http:
        sio = socketio.AsyncClient(reconnection=False, http_session=http)
        await sio.connect(
            proxy,
            namespaces=[NS],
            auth={"room": "proxy-room", "token": token("bob")},
            transports=[transport],
            wait_timeout=5,
        )
        try:
            hub = server.app[DANMAKU].hub
            member = await wait_until(
                lambda: next((m for m in hub.members.values() if m.user_id == "bob"), None),
                what="bob joined",
            )
            assert member.ip == BOB
        finally:
            if transport == "polling":
                # python-engineio's polling client waits for its pending long-poll GET on a
                # clean disconnect (up to the 25 s ping interval): close without waiting
                await sio.eio.disconnect(abort=True)
            else:
                await sio.disconnect()


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_flv_viewers_are_named_by_the_client_behind_the_proxy(
    server_factory: Callable[..., Any], trusted: bool, tmp_path: Path
) -> None:
    """HTTP-FLV plays through the proxy: the hub lists the viewer (and play hooks would be
    told) as Alice behind a trusted proxy, as the proxy's own connection otherwise; a
    direct play keeps its address and port."""
    server = await server_factory(server=TRUSTED if trusted else {})
    clip = make_clip(tmp_path / "proxy.flv", 4.0, fps=25, gop=25)
    proc = await start_publisher(server.push_url("px"), clip, loop=True)
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "px")) is not None and h.gop_valid, 20)
        hub = registry.get("live", "px")
        async with reverse_proxy(server.http_url) as proxy:
            async with client_from(ALICE) as alice, client_from(BOB) as bob:
                async with (
                    alice.get(proxy + "/live/px.flv") as through,
                    bob.get(server.http_url + "/live/px.flv") as direct,
                ):
                    assert through.status == 200 and direct.status == 200
                    assert (await through.content.readexactly(13))[:3] == b"FLV"
                    assert (await direct.content.readexactly(13))[:3] == b"FLV"
                    remotes = {v.info.remote for v in hub.viewers}
                    assert any(r.startswith(f"{BOB}:") for r in remotes), remotes
                    if trusted:
                        assert ALICE in remotes, remotes
                    else:
                        assert ALICE not in remotes
                        assert any(r.startswith("127.0.0.1:") for r in remotes), remotes
    finally:
        await stop(proc)
