"""Auth on every endpoint: no token, wrong role, other anchors' broadcasts, expired and
revoked tokens, brute-force login limited."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa

from control.api import CONTROL, OPS
from control.models import tokens
from tests.control.conftest import PASSWORD

ROLES = ("operator", "anchor", "moderator")


PLACEHOLDER = re.compile(r"\{([_a-zA-Z][_a-zA-Z0-9]*)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")
"""A route's ``{name}`` or ``{name:regex}`` (whose regex may hold ``{m,n}``)."""
EXAMPLES = {"subscriber": "someone", "delivery_id": "1", "app": "live", "stream": "s1"}


def concrete(path: str, bid: int) -> str:
    """The route with an example value in each placeholder (the broadcast's id for ``id``)."""
    return PLACEHOLDER.sub(lambda m: EXAMPLES.get(m.group(1), str(bid)), path)


async def test_every_endpoint_refuses_missing_token_and_wrong_role(staff) -> None:
    b = await staff.create_broadcast()  # no anchor: not the test anchor's
    checked = 0
    for op in OPS:
        roles = op.doc.roles
        if "public" in roles:
            continue
        path = concrete(op.path, b["id"])
        status, body = await staff.api.call(op.method, path)
        assert status == 401, (op.method, path, status, body)
        assert body["error"]["code"] == "unauthorized"
        status, body = await staff.api.call(op.method, path, "blk_s_not-a-real-token")
        assert status == 401 and body["error"]["code"] == "invalid_token", (op.path, body)
        for role in ROLES:
            if role == "operator" or role in roles or "any" in roles:
                continue
            status, body = await staff.api.call(op.method, path, staff.tokens[role])
            assert status == 403, (op.method, path, role, status, body)
            assert body["error"]["code"] == "forbidden"
            checked += 1
    assert checked > 20


async def test_anchor_sees_only_their_broadcasts(staff) -> None:
    mine = await staff.create_broadcast(title="mine", anchor_id=staff.ids["anchor"])
    other = await staff.create_broadcast(title="other")
    status, page = await staff.api.call("GET", "/api/broadcasts", staff.anchor)
    assert status == 200 and [b["id"] for b in page["items"]] == [mine["id"]]
    status, page = await staff.api.call("GET", "/api/broadcasts", staff.moderator)
    assert status == 200 and page["total"] == 2
    for suffix in ("", "/push", "/push/qr.png", "/play", "/stats", "/history"):
        status, _ = await staff.api.call(
            "GET", f"/api/broadcasts/{other['id']}{suffix}", staff.anchor
        )
        assert status == 404, suffix
        status, _ = await staff.api.call(
            "GET", f"/api/broadcasts/{mine['id']}{suffix}", staff.anchor
        )
        assert status == 200, suffix
    status, _ = await staff.api.call(
        "POST", f"/api/broadcasts/{other['id']}/push/rotate", staff.anchor
    )
    assert status == 404
    # a moderator may watch but not get the push URL
    status, _ = await staff.api.call("GET", f"/api/broadcasts/{mine['id']}/push", staff.moderator)
    assert status == 403


async def test_expired_and_revoked_tokens(staff) -> None:
    accounts = staff.server.app[CONTROL].accounts
    engine = staff.server.app[CONTROL].engine
    token, info = await accounts.issue_token(staff.ids["moderator"], "api", "short", ttl=3600)
    status, _ = await staff.api.call("GET", "/api/me", token)
    assert status == 200
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(tokens).where(tokens.c.id == info.id).values(expires_at=time.time() - 1)
        )
    status, body = await staff.api.call("GET", "/api/me", token)
    assert status == 401 and body["error"]["code"] == "token_expired"

    # API tokens: create, use, revoke
    status, created = await staff.api.call(
        "POST", "/api/tokens", staff.anchor, json={"name": "obs plugin", "expires_in": 3600}
    )
    assert status == 201 and created["token"].startswith("blk_a_")
    status, me = await staff.api.call("GET", "/api/me", created["token"])
    assert status == 200 and me["role"] == "anchor"
    status, listing = await staff.api.call("GET", "/api/tokens", staff.anchor)
    assert [t["name"] for t in listing["items"]] == ["obs plugin"]
    assert "token" not in listing["items"][0]
    status, _ = await staff.api.call("DELETE", f"/api/tokens/{created['id']}", staff.moderator)
    assert status == 404  # not theirs
    status, _ = await staff.api.call("DELETE", f"/api/tokens/{created['id']}", staff.anchor)
    assert status == 204
    status, body = await staff.api.call("GET", "/api/me", created["token"])
    assert status == 401 and body["error"]["code"] == "token_revoked"

    # logout ends the session
    status, _ = await staff.api.call("POST", "/api/auth/logout", staff.moderator)
    assert status == 204
    status, body = await staff.api.call("GET", "/api/me", staff.moderator)
    assert status == 401 and body["error"]["code"] == "token_revoked"

    # disabling an account ends its sessions and API tokens stop working
    status, _ = await staff.api.call(
        "PATCH", f"/api/users/{staff.ids['anchor']}", staff.operator, json={"disabled": True}
    )
    assert status == 200
    status, body = await staff.api.call("GET", "/api/me", staff.anchor)
    assert status == 401


async def test_brute_force_login_is_limited(staff) -> None:
    api = staff.api
    for _ in range(5):
        status, body = await api.call(
            "POST", "/api/auth/login", json={"username": "anchor1", "password": "wrong-guess"}
        )
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    # now even the right password is refused until the window passes
    async with api.session.post(
        api.base + "/api/auth/login", json={"username": "anchor1", "password": PASSWORD}
    ) as r:
        assert r.status == 429
        assert 0 < int(r.headers["Retry-After"]) <= 300
        assert (await r.json())["error"]["code"] == "too_many_attempts"
    # another account is not locked out by it
    status, _ = await api.call(
        "POST", "/api/auth/login", json={"username": "moderator1", "password": PASSWORD}
    )
    assert status == 200
    # unknown users cost the same and are limited the same way
    for _ in range(5):
        status, _ = await api.call(
            "POST", "/api/auth/login", json={"username": "nobody", "password": "x"}
        )
        assert status == 401
    status, _ = await api.call(
        "POST", "/api/auth/login", json={"username": "nobody", "password": "x"}
    )
    assert status == 429


async def test_passwords_are_argon2_hashed(staff) -> None:
    from control.models import users

    engine = staff.server.app[CONTROL].engine
    async with engine.connect() as conn:
        hashes = (await conn.scalars(sa.select(users.c.password_hash))).all()
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)
