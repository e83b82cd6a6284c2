"""Fixtures for the control plane: a full server, accounts of each role, an API client."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from control.accounts import Role
from control.api import CONTROL
from tests.conftest import RunningServer

PASSWORD = "correct horse battery"


@dataclass
class Api:
    """A tiny client: ``await api.call("GET", "/api/me", token=...)`` -> (status, body)."""

    base: str
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=h
        ) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()


@dataclass
class Staff:
    server: RunningServer
    api: Api
    tokens: dict[str, str]
    ids: dict[str, int]

    @property
    def operator(self) -> str:
        return self.tokens["operator"]

    @property
    def anchor(self) -> str:
        return self.tokens["anchor"]

    @property
    def moderator(self) -> str:
        return self.tokens["moderator"]

    async def create_broadcast(self, **fields: Any) -> dict[str, Any]:
        body = {"title": "Spring tea tasting", "scheduled_start": "2030-01-01T12:00:00Z"}
        body.update(fields)
        status, b = await self.api.call("POST", "/api/broadcasts", self.operator, json=body)
        assert status == 201, b
        return b  # type: ignore[no-any-return]

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """An operator's call that must answer ``status``: its body."""
        got, data = await self.api.call(method, path, self.operator, json=body)
        assert got == status, (method, path, got, data)
        return data


async def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``await cond()`` every 0.1 s until it is truthy (its value), failing with
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = await cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        await asyncio.sleep(0.1)


async def place_order(
    staff: Staff, bid: int, sku_id: int, viewer: dict[str, str], recipient: dict[str, str]
) -> tuple[int, Any]:
    """One unit of ``sku_id`` ordered on broadcast ``bid`` by the buyer whose headers are
    ``viewer`` (their viewer token), shipped to ``recipient``: (status, body)."""
    return await staff.api.call(
        "POST",
        "/api/orders",
        json={
            "sku_id": sku_id,
            "quantity": 1,
            "broadcast_id": bid,
            "idempotency_key": uuid.uuid4().hex,
            "recipient": recipient,
        },
        headers=viewer,
    )


async def paid_order(
    staff: Staff, bid: int, sku_id: int, viewer: dict[str, str], recipient: dict[str, str]
) -> dict[str, Any]:
    """:func:`place_order` (answered 201), paid through the payment simulator; the order
    once the API shows it ``paid``."""
    status, order = await place_order(staff, bid, sku_id, viewer, recipient)
    assert status == 201, order
    status, pay = await staff.api.call("POST", f"/api/orders/{order['id']}/pay", headers=viewer)
    assert status == 200, pay
    async with staff.api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert r.status == 200

    async def paid() -> bool:
        _, o = await staff.api.call("GET", f"/api/orders/{order['id']}", staff.operator)
        return bool(o["state"] == "paid")

    await wait_for(paid, "order paid")
    return order  # type: ignore[no-any-return]


def database_params() -> list[Any]:
    """Both backends, always: the session's PostgreSQL is resolved before any test runs
    (``tests/services.py``), so this list does not depend on when this file is imported."""
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
async def pg_database() -> AsyncIterator[Callable[[], Any]]:
    """Make a fresh PostgreSQL database per test (dropped after) from the test URL."""
    made: list[str] = []
    base = os.environ.get("BERRYLIVE_TEST_DATABASE_URL", "")
    assert base, "BERRYLIVE_TEST_DATABASE_URL unset: tests/services.py resolves it per session"

    async def make() -> str:
        import asyncpg

        name = "berrylive_ctl_" + uuid.uuid4().hex[:10]
        dsn = base.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return base.rsplit("/", 1)[0] + "/" + name

    yield make
    if made:
        import asyncpg

        dsn = base.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn)
        try:
            for name in made:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


CONTROL_TEST_SETTINGS: dict[str, Any] = {
    "interrupt_grace": 1.5,
    "sweep_interval": 0.2,
    "webhook_backoff": 0.2,
    "webhook_max_attempts": 3,
    "webhook_timeout": 2.0,
}


@pytest.fixture
def control_env() -> dict[str, Any]:
    """The ``[control]`` section for tests: short grace periods so the lifecycle can be
    watched. Pass it as ``server_factory(control=control_env)``."""
    return dict(CONTROL_TEST_SETTINGS)


async def make_staff(server: RunningServer, session: aiohttp.ClientSession) -> Staff:
    accounts = server.app[CONTROL].accounts
    assert accounts is not None
    api = Api(server.http_url, session)
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for role in Role:
        user = await accounts.create_user(f"{role.value}1", PASSWORD, role, f"{role.value} one")
        status, body = await api.call(
            "POST", "/api/auth/login", json={"username": user.username, "password": PASSWORD}
        )
        assert status == 200, body
        tokens[role.value] = body["token"]
        ids[role.value] = user.id
    return Staff(server, api, tokens, ids)


@pytest.fixture(params=database_params())
async def staff(
    request: pytest.FixtureRequest,
    control_env: dict[str, Any],
    server_factory: Callable[..., Any],
    pg_database: Callable[[], Any],
) -> AsyncIterator[Staff]:
    sections: dict[str, Any] = {"control": control_env}
    if request.param == "postgres":
        sections["database"] = {"url": await pg_database()}
    server = await server_factory(**sections)
    async with aiohttp.ClientSession() as session:
        yield await make_staff(server, session)
