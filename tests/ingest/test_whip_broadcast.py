"""A broadcast's push credential publishes over WHIP too, and drives the broadcast's
lifecycle exactly as an RTMP publish does; the key rotation cuts a WHIP publisher and
refuses its old token; ``berrylive push-url --whip`` prints a working URL and token; the
``on_publish`` hook refuses a WHIP publish (403) and hears ``on_unpublish``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
from aiohttp import web

from control import cli
from ingest.events import StreamUnpublished
from ingest.whip import WHIP_SERVER
from relay.http import REGISTRY
from tests.control.conftest import CONTROL_TEST_SETTINGS, make_staff
from tests.control.test_lifecycle import wait_state
from tests.control.test_publish import now_iso
from tests.ingest.test_whip_media import whip_publish
from tests.mediautil import stop, wait_for

WEBRTC = {"udp_port": 0, "no_media_timeout": 2.0}


async def test_broadcast_push_credential_works_for_whip(server_factory) -> None:
    server = await server_factory(control=dict(CONTROL_TEST_SETTINGS), webrtc=WEBRTC)
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        b = await staff.create_broadcast(
            anchor_id=staff.ids["anchor"],
            scheduled_start=now_iso(60),
            scheduled_end=now_iso(3600),
        )
        status, push = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
        assert status == 200, push
        assert push["whip_url"] == f"{server.http_url}/whip/{b['app']}/{b['stream']}"
        assert push["whip_token"] == push["url"].split("?", 1)[1]
        proc = await whip_publish(push["whip_url"], push["whip_token"])
        try:
            await wait_state(staff, b["id"], "live", timeout=30)
            # rotating the key cuts the WHIP publisher and refuses the old token
            status, _ = await staff.api.call(
                "POST", f"/api/broadcasts/{b['id']}/push/rotate", staff.anchor
            )
            assert status == 200
            await wait_for(lambda: server.app[WHIP_SERVER].sessions == {}, timeout=15)
            # (ffmpeg 9 keeps sending into the void after our DTLS close_notify: its UDP
            # packets from an address no session owns are dropped)
            async with session.post(
                push["whip_url"],
                data=b"v=0\r\n",
                headers={
                    "Authorization": f"Bearer {push['whip_token']}",
                    "Content-Type": "application/sdp",
                },
            ) as resp:
                assert resp.status == 401
                assert "revoked" in (await resp.json())["error"]["message"]
        finally:
            await stop(proc)
        await wait_state(staff, b["id"], "ended", timeout=30)  # interrupted, then ended


async def test_cli_push_url_whip(server_factory, capsys, tmp_path, monkeypatch) -> None:
    server = await server_factory(webrtc=WEBRTC)
    for key in [k for k in os.environ if k.startswith("BERRYLIVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BERRYLIVE_SERVER_SECRET", server.config.server.secret)
    monkeypatch.setenv("BERRYLIVE_SERVER_HTTP_PORT", str(server.runtime.http_port))
    monkeypatch.setenv("BERRYLIVE_SERVER_RTMP_PORT", str(server.runtime.rtmp_port))
    env_args = ["--data-dir", str(tmp_path / "cli"), "--host", "127.0.0.1"]
    assert cli.main(["push-url", *env_args, "--whip", "cam"]) == 0
    url, tok = capsys.readouterr().out.split()
    assert url == f"{server.http_url}/whip/live/cam"
    assert cli.main(["push-url", *env_args, "--json", "cam"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["whip_url"] == url and body["url"].startswith("rtmp://")
    assert body["whip_token"] == body["url"].split("?", 1)[1]
    assert cli.main(["push-url", *env_args, "cam"]) == 0
    assert capsys.readouterr().out.strip().startswith("rtmp://127.0.0.1:")
    proc = await whip_publish(url, tok, frames=30)
    try:
        await wait_for(
            lambda: (h := server.app[REGISTRY].get("live", "cam")) is not None and h.live, 30
        )
    finally:
        await stop(proc)


async def test_hooks_refuse_and_hear_whip(server_factory) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        action = request.match_info["action"]
        calls.append((action, body))
        refuse = action == "on_publish" and body["stream"] == "refused"
        return web.Response(text="1" if refuse else "0")

    hooks = web.Application()
    hooks.router.add_post("/{action}", hook)
    runner = web.AppRunner(hooks)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        server = await server_factory(
            webrtc=WEBRTC,
            ingest={"on_publish": f"{base}/on_publish", "on_unpublish": f"{base}/on_unpublish"},
        )
        from tests.ingest.test_whip_media import token

        async with aiohttp.ClientSession() as session:
            # a refused publish is 403 before any media; the real offer comes from ffmpeg
            proc = await whip_publish(f"{server.http_url}/whip/live/refused", token("refused"))
            try:
                assert await asyncio.wait_for(proc.wait(), 30) != 0
            finally:
                await stop(proc)
            assert [c[0] for c in calls] == ["on_publish"]
            assert server.app[REGISTRY].get("live", "refused") is None
            assert server.app[WHIP_SERVER].sessions == {}
            assert not session.closed
        seen: list[StreamUnpublished] = []
        off = server.runtime.bus.on(StreamUnpublished, seen.append)
        proc = await whip_publish(f"{server.http_url}/whip/live/ok", token("ok"), frames=45)
        try:
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            await stop(proc)
        await wait_for(lambda: [c for c in calls if c[0] == "on_unpublish"] != [], 15)
        off()
        publish = [c[1] for c in calls if c[0] == "on_publish" and c[1]["stream"] == "ok"]
        assert publish and publish[0]["app"] == "live" and publish[0]["param"].startswith("?")
        assert publish[0]["protocol"] == "whip"
        assert [e.reason for e in seen] == ["unpublished"]
    finally:
        await runner.cleanup()
