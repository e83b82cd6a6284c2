"""Accounts: sign-in and sign-out, the signed-in user, user accounts, API tokens.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from control import validate
from control.accounts import AccountError, Role, TokenInfo, User
from control.auth import PUBLIC, principal_of
from control.context import OPS_ROLES, accounts_of, client_ip, control_of, page, paging
from control.events import StaffRevoked
from control.validate import invalid, iso, path_id
from core.http import ApiError, read_json
from core.routes import CALLERS_OWN, PAGING, Op, OpDoc, query_param
from core.runtime import RUNTIME

logger = logging.getLogger(__name__)

# -- serializers ---------------------------------------------------------------------


def user_json(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role.value,
        "disabled": u.disabled,
        "created_at": iso(u.created_at),
    }


def token_json(t: TokenInfo) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "kind": t.kind,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


# -- auth ----------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    ctl = control_of(request)
    accounts = ctl.need()[0]
    assert ctl.limiter is not None
    body = await read_json(request, 8192)
    validate.only(body, {"username", "password"})
    username = validate.text(body, "username", required=True, min_len=1, max_len=64) or ""
    password = body.get("password")
    if not isinstance(password, str) or not 1 <= len(password) <= 1024:
        invalid("password must be a string of 1..1024 characters")
    ip = client_ip(request)
    attempt = await ctl.limiter.attempt(username, ip)  # counted before the password is
    if attempt.wait:
        err = ApiError(
            429, "too_many_attempts", f"too many failed logins; retry in {attempt.wait} s"
        )
        err.headers["Retry-After"] = str(attempt.wait)
        raise err
    if attempt.delay:
        await asyncio.sleep(attempt.delay)  # the account is being guessed at: slowed
    user = await accounts.authenticate(username, password)
    if user is None:
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    await ctl.limiter.succeeded(username, ip)
    token, info = await accounts.issue_token(
        user.id, "session", name=f"login from {ip}", ttl=ctl.settings.session_ttl
    )
    return web.json_response(
        {"token": token, "expires_at": iso(info.expires_at), "user": user_json(user)}
    )


async def logout(request: web.Request) -> web.Response:
    p = principal_of(request)
    await accounts_of(request).revoke_token(p.token_id, p.user.id)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    return web.json_response(user_json(principal_of(request).user))


# -- users ---------------------------------------------------------------------------


def _role(value: Any, name: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        invalid(f"{name} must be one of operator, anchor, moderator")


def _account_error(exc: AccountError) -> ApiError:
    status = 409 if exc.code == "conflict" else 400
    return ApiError(status, exc.code, str(exc))


async def list_users(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    role = _role(request.query["role"]) if "role" in request.query else None
    items, total = await accounts_of(request).list_users(limit, offset, role)
    return web.json_response(page([user_json(u) for u in items], total, limit, offset))


async def create_user(request: web.Request) -> web.Response:
    body = await read_json(request)
    validate.only(body, {"username", "password", "role", "display_name"})
    username = validate.text(body, "username", required=True, max_len=64) or ""
    password = body.get("password")
    if not isinstance(password, str):
        invalid("password is required (a string)")
    role = _role(body.get("role"))
    display = validate.text(body, "display_name", max_len=128) or ""
    try:
        user = await accounts_of(request).create_user(username, password, role, display)
    except AccountError as exc:
        raise _account_error(exc) from None
    return web.json_response(user_json(user), status=201)


async def _user_or_404(request: web.Request) -> User:
    uid = path_id(request.match_info["id"])
    user = await accounts_of(request).get_user(uid)
    if user is None:
        raise ApiError(404, "not_found", f"no user {uid}")
    return user


async def get_user(request: web.Request) -> web.Response:
    return web.json_response(user_json(await _user_or_404(request)))


async def update_user(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    body = await read_json(request)
    validate.only(body, {"password", "role", "display_name", "disabled"})
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        invalid("password must be a string")
    role = _role(body["role"]) if body.get("role") is not None else None
    disabled = validate.boolean(body, "disabled")
    me_ = principal_of(request).user
    if user.id == me_.id and (disabled or (role is not None and role is not Role.OPERATOR)):
        raise ApiError(409, "conflict", "you cannot disable or demote yourself")
    try:
        updated = await accounts_of(request).update_user(
            user.id,
            display_name=validate.text(body, "display_name", max_len=128),
            role=role,
            password=password,
            disabled=disabled,
        )
    except AccountError as exc:
        raise _account_error(exc) from None
    assert updated is not None
    why = [
        w
        for w, changed in (
            ("password changed", password is not None),
            ("disabled", bool(disabled)),
            ("role changed", role is not None and role is not user.role),
        )
        if changed
    ]
    if why:
        await _revoked(request, user.id, ", ".join(why))
    return web.json_response(user_json(updated))


async def _revoked(request: web.Request, user_id: int, reason: str) -> None:
    """Tell the other packages (the danmaku hub) that the account's tokens are void."""
    await request.app[RUNTIME].bus.emit(
        StaffRevoked(user_id=user_id, at=time.time(), reason=reason)
    )


async def delete_user(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    if user.id == principal_of(request).user.id:
        raise ApiError(409, "conflict", "you cannot delete yourself")
    try:
        await accounts_of(request).delete_user(user.id)
    except IntegrityError:
        raise ApiError(
            409, "conflict", "the user anchors broadcasts; disable the account instead"
        ) from None
    await _revoked(request, user.id, "deleted")
    return web.Response(status=204)


# -- API tokens ------------------------------------------------------------------------


async def list_tokens(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    items, total = await accounts_of(request).list_tokens(
        principal_of(request).user.id, limit, offset
    )
    return web.json_response(page([token_json(t) for t in items], total, limit, offset))


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    validate.only(body, {"name", "expires_in"})
    name = validate.text(body, "name", required=True, min_len=1, max_len=128) or ""
    ttl = validate.integer(body, "expires_in", lo=60, hi=10 * 365 * 86400)
    token, info = await accounts_of(request).issue_token(
        principal_of(request).user.id, "api", name=name, ttl=ttl
    )
    return web.json_response({**token_json(info), "token": token}, status=201)


async def delete_token(request: web.Request) -> web.Response:
    tid = path_id(request.match_info["id"])
    p = principal_of(request)
    owner = None if p.role is Role.OPERATOR else p.user.id
    if not await accounts_of(request).revoke_token(tid, owner):
        raise ApiError(404, "not_found", f"no active token {tid}")
    return web.Response(status=204)


# -- routes ------------------------------------------------------------------------

OPS: list[Op] = [
    Op(
        "POST",
        "/api/auth/login",
        login,
        OpDoc(
            "Sign in; returns a session token",
            "auth",
            (PUBLIC,),
            body="LoginRequest",
            response="LoginResponse",
            errors=(401, 429),
        ),
    ),
    Op(
        "POST",
        "/api/auth/logout",
        logout,
        OpDoc(
            "Revoke the token used for this call",
            "auth",
            ("any",),
            ok=204,
        ),
        owner=CALLERS_OWN,
    ),
    Op(
        "GET",
        "/api/me",
        me,
        OpDoc("The signed-in user", "auth", ("any",), response="User"),
        owner=CALLERS_OWN,
    ),
    Op(
        "GET",
        "/api/users",
        list_users,
        OpDoc(
            "List accounts",
            "users",
            OPS_ROLES,
            response="UserList",
            query=[
                *PAGING,
                query_param(
                    "role", {"type": "string", "enum": ["operator", "anchor", "moderator"]}
                ),
            ],
        ),
    ),
    Op(
        "POST",
        "/api/users",
        create_user,
        OpDoc(
            "Create an account",
            "users",
            OPS_ROLES,
            body="UserCreate",
            ok=201,
            response="User",
            errors=(409,),
        ),
    ),
    Op(
        "GET",
        "/api/users/{id}",
        get_user,
        OpDoc("One account", "users", OPS_ROLES, response="User"),
    ),
    Op(
        "PATCH",
        "/api/users/{id}",
        update_user,
        OpDoc(
            "Change role, password, name or disable",
            "users",
            OPS_ROLES,
            body="UserUpdate",
            response="User",
            errors=(409,),
        ),
    ),
    Op(
        "DELETE",
        "/api/users/{id}",
        delete_user,
        OpDoc(
            "Delete an account",
            "users",
            OPS_ROLES,
            ok=204,
            errors=(409,),
        ),
    ),
    Op(
        "GET",
        "/api/tokens",
        list_tokens,
        OpDoc(
            "My API tokens",
            "auth",
            ("any",),
            response="TokenList",
            query=PAGING,
        ),
        owner=CALLERS_OWN,
    ),
    Op(
        "POST",
        "/api/tokens",
        create_token,
        OpDoc(
            "Create an API token (shown once)",
            "auth",
            ("any",),
            body="TokenCreate",
            ok=201,
            response="TokenCreated",
        ),
        owner=CALLERS_OWN,
    ),
    Op(
        "DELETE",
        "/api/tokens/{id}",
        delete_token,
        OpDoc(
            "Revoke an API token",
            "auth",
            ("any",),
            ok=204,
        ),
        owner=CALLERS_OWN,
    ),
]
