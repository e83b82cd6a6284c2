"""Staff hub tokens can be revoked, and staff names stay out of the room (issue 17 lows):
a password change, disabling, demoting or deleting a staff account voids its hub tokens on
every node and disconnects its sockets; bus events shown to viewers as notices never carry
the acting staff member's login name."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bench.danmaku import eio
from tests.control.conftest import PASSWORD, make_staff
from tests.danmaku.helpers import NS, Viewer, join, wait_until


async def hub_token(staff, who: str, broadcast_id: int) -> str:
    status, body = await staff.api.call(
        "POST", f"/api/broadcasts/{broadcast_id}/danmaku-token", staff.tokens[who]
    )
    assert status == 200, body
    return str(body["token"])


async def refused_code(server, auth) -> str:
    with pytest.raises(ConnectionRefusedError) as raw:
        await eio.connect("127.0.0.1", server.runtime.http_port, auth)
    return str(raw.value.args[0]["data"]["code"])


@pytest.mark.parametrize(
    "change",
    [{"password": "another long passphrase 42"}, {"disabled": True}, {"role": "anchor"}],
    ids=["password", "disabled", "demoted"],
)
async def test_a_revoked_staff_member_loses_the_room(server_factory, change) -> None:
    server = await server_factory()
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        b = await staff.create_broadcast(anchor_id=staff.ids["anchor"])
        room = f"{b['app']}/{b['stream']}"
        token = await hub_token(staff, "moderator", b["id"])
        mod = await Viewer().connect(server.http_url, {"room": room, "token": token})
        assert mod.of("joined")[0]["you"]["role"] == "moderator"
        disconnected = asyncio.Event()
        mod.sio.on("disconnect", lambda *a: disconnected.set(), namespace=NS)

        status, body = await staff.api.call(
            "PATCH", f"/api/users/{staff.ids['moderator']}", staff.operator, json=change
        )
        assert status == 200, body
        await asyncio.wait_for(disconnected.wait(), 10)
        # the same token no longer gets in, on this node or any (the marker is in Redis)
        assert await refused_code(server, {"room": room, "token": token}) == "token_revoked"
        if "password" in change:  # signing in again gives a new token that works
            status, login = await staff.api.call(
                "POST",
                "/api/auth/login",
                json={"username": "moderator1", "password": change["password"]},
            )
            assert status == 200, login
            staff.tokens["moderator"] = login["token"]
            fresh = await hub_token(staff, "moderator", b["id"])
            again = await Viewer().connect(server.http_url, {"room": room, "token": fresh})
            assert again.of("joined")[0]["you"]["role"] == "moderator"
            await again.close()
    assert PASSWORD  # the fixture's password is not the new one


async def test_staff_names_never_reach_viewers(server_factory) -> None:
    server = await server_factory()
    viewer = await join(server, "live/names", "v1")
    try:
        await server.runtime.bus.publish(
            "card.pushed",
            {"room": "live/names", "product_id": 3, "title": "Tea", "actor": "operator-alice"},
        )
        await server.runtime.bus.publish(
            "flash_sale.closed",
            {"room": "live/names", "id": 9, "closed_by": "operator-alice", "status": "closed"},
        )
        await wait_until(lambda: len(viewer.notices) >= 2, what="two notices")
        assert "operator-alice" not in repr(viewer.notices)
        assert viewer.notices[0]["data"]["title"] == "Tea"
    finally:
        await viewer.close()
