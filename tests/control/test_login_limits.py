"""The login limiter counts before it verifies (issue 17 item 6): concurrent guesses past
the limit are never evaluated, and guessing a known user's password from one address
does not lock that user out from their own address."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp

from control.accounts import LoginLimiter
from core.runtime import RUNTIME
from tests.control.conftest import PASSWORD


async def _login(session: aiohttp.ClientSession, base: str, user: str, password: str) -> int:
    async with session.post(
        base + "/api/auth/login", json={"username": user, "password": password}
    ) as r:
        await r.read()
        return r.status


async def test_concurrent_guesses_past_the_limit_are_not_evaluated(staff) -> None:
    api = staff.api
    statuses = await asyncio.gather(
        *(_login(api.session, api.base, "anchor1", f"guess-{i}") for i in range(20))
    )
    # the limit is 5: exactly 5 guesses reach the password check, 15 are refused unseen
    assert Counter(statuses) == {401: 5, 429: 15}, Counter(statuses)


async def test_guesses_from_one_address_do_not_lock_the_user_out_of_theirs(staff) -> None:
    api = staff.api
    attacker = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=attacker) as evil:
        for i in range(5):
            assert await _login(evil, api.base, "anchor1", f"guess-{i}") == 401
        # that address is done with this account, even with the right password
        assert await _login(evil, api.base, "anchor1", PASSWORD) == 429
        # another account from the same address still works (per account and address)
        assert await _login(evil, api.base, "moderator1", PASSWORD) == 200
    # the user, from their own address: signs in at once
    assert await _login(api.session, api.base, "anchor1", PASSWORD) == 200


async def test_a_successful_login_clears_the_address_count(staff) -> None:
    api = staff.api
    for i in range(4):
        assert await _login(api.session, api.base, "anchor1", f"typo-{i}") == 401
    assert await _login(api.session, api.base, "anchor1", PASSWORD) == 200
    statuses = [await _login(api.session, api.base, "anchor1", f"again-{i}") for i in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_an_account_guessed_from_everywhere_is_slowed_never_locked(server) -> None:
    limiter = LoginLimiter(server.app[RUNTIME].redis, max_user=5, max_ip=30, window=60)
    user = "victim-" + uuid.uuid4().hex[:8]
    slow_after = LoginLimiter.SLOW_AFTER * 5
    delays = []
    for i in range(slow_after + 20):  # one guess from each of many addresses
        attempt = await limiter.attempt(user, f"10.1.{i // 250}.{i % 250}")
        assert attempt.wait == 0
        delays.append(attempt.delay)
    assert delays[:slow_after] == [0.0] * slow_after
    assert 0 < delays[slow_after] < delays[-1] <= LoginLimiter.MAX_DELAY
    # the user, from their address: still allowed (slowed)
    mine = await limiter.attempt(user, "192.0.2.7")
    assert mine.wait == 0 and mine.delay > 0


async def test_an_address_is_limited_over_every_account(server) -> None:
    limiter = LoginLimiter(server.app[RUNTIME].redis, max_user=5, max_ip=30, window=60)
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    tag = uuid.uuid4().hex[:8]
    for i in range(30):
        assert (await limiter.attempt(f"user{i}-{tag}", ip)).wait == 0
    refused = await limiter.attempt(f"fresh-{tag}", ip)
    assert 0 < refused.wait <= 60
    # another address is not affected
    assert (await limiter.attempt(f"fresh-{tag}", ip + "1")).wait == 0


async def test_a_password_change_revokes_every_token(staff) -> None:
    """Whoever knew the old password may have minted API tokens: none outlives a change."""
    api = staff.api
    status, created = await api.call(
        "POST", "/api/tokens", staff.anchor, json={"name": "minted by a thief"}
    )
    assert status == 201
    stolen = created["token"]
    assert (await api.call("GET", "/api/me", stolen))[0] == 200
    status, _ = await api.call(
        "PATCH",
        f"/api/users/{staff.ids['anchor']}",
        staff.operator,
        json={"password": "a brand new passphrase 42"},
    )
    assert status == 200
    for token in (stolen, staff.anchor):
        status, body = await api.call("GET", "/api/me", token)
        assert status == 401 and body["error"]["code"] == "token_revoked", body
