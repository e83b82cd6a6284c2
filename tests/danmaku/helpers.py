"""Real Socket.IO clients against a real berrylive server (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

from danmaku import issue_token
from tests.conftest import TEST_SECRET

NS = "/live"


async def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def token(uid: str, role: str = "viewer", nick: str | None = None, **kw: Any) -> str:
    return issue_token(TEST_SECRET, uid, nick or f"nick-{uid}", role, **kw)


class Viewer:
    """A python-socketio AsyncClient that records every event it gets on /live."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._any, namespace=NS)

    async def _any(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    def of(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    @property
    def comments(self) -> list[dict[str, Any]]:
        return [c for b in self.of("comments") for c in b["comments"]]

    @property
    def texts(self) -> list[str]:
        return [c["text"] for c in self.comments]

    @property
    def notices(self) -> list[dict[str, Any]]:
        return [n for b in self.of("comments") for n in b.get("notices", [])]

    async def connect(self, base_url: str, auth: dict[str, Any]) -> Viewer:
        await self.sio.connect(
            base_url, namespaces=[NS], auth=auth, transports=["websocket"], wait_timeout=5
        )
        await wait_until(lambda: self.of("joined"), what="joined")
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        return await self.sio.call(event, data, namespace=NS, timeout=timeout)

    async def close(self) -> None:
        await self.sio.disconnect()


async def join(server, room: str, uid: str | None = None, role: str = "viewer", **auth: Any):
    v = Viewer()
    a: dict[str, Any] = {"room": room, **auth}
    if uid is not None:
        a["token"] = token(uid, role)
    return await v.connect(server.http_url, a)


class StaffApi:
    """REST calls as signed-in staff (accounts made by the control plane's test helper)."""

    def __init__(self, server, session, staff) -> None:
        self.server = server
        self.session = session
        self.staff = staff

    async def call(self, method: str, path: str, role: str = "operator", json: Any = None):
        return await self.staff.api.call(method, path, self.staff.tokens[role], json=json)


async def staff_api(server, session) -> StaffApi:
    from tests.control.conftest import make_staff

    return StaffApi(server, session, await make_staff(server, session))
