"""Who may call what under ``/api/``: one middleware for every package's routes.

A route's roles are those its package declared in its route table
(:class:`core.routes.RouteTable`), recorded by ``install`` against the aiohttp route
object the request matched (:func:`core.routes.roles_of`). A route under ``/api/`` that
no table declares is refused (``403 undeclared_route``, logged as an error): nobody gets
a default.

Role names: ``operator``, ``anchor``, ``moderator``; ``public`` (no token needed) and
``any`` (any signed-in user). Operators pass every check.

Anchors see only their broadcasts: for an anchor, a route whose path has
``{broadcast_id}`` (or ``{id}`` under ``/api/broadcasts/``) answers 404 unless that
broadcast is theirs.

The caller's :class:`~control.accounts.Principal` is ``request[PRINCIPAL]`` (``None`` for
a public route called without a token).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from control.accounts import Accounts, Principal, Role
from core import routes
from core.http import CALLER, ApiError, Caller
from core.routes import roles_of

logger = logging.getLogger(__name__)

PUBLIC = "public"
ANY = "any"
ROLE_NAMES = frozenset({PUBLIC, ANY, *(r.value for r in Role)})
if ROLE_NAMES != routes.ROLE_NAMES:  # pragma: no cover - a programming error
    raise ImportError("control.accounts.Role and core.routes.ROLE_NAMES disagree")

PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("berrylive.principal")
OwnerCheck = Callable[[int, int], Awaitable[bool]]


@dataclass
class AuthState:
    """What the middleware needs; filled when the control plane starts."""

    accounts: Accounts | None = None
    owner_check: OwnerCheck | None = None


AUTH: web.AppKey[AuthState] = web.AppKey("berrylive.control.auth", AuthState)


def route_roles(request: web.Request) -> tuple[str, ...] | None:
    """The roles of the matched route; ``None``: no route table declares it."""
    return roles_of(request)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-Api-Token") or None


def _unauthorized(code: str, message: str) -> ApiError:
    err = ApiError(401, code, message)
    err.headers["WWW-Authenticate"] = 'Bearer realm="berrylive"'
    return err


def allows(roles: Iterable[str], principal: Principal) -> bool:
    roles = tuple(roles)
    return principal.role is Role.OPERATOR or ANY in roles or principal.role.value in roles


def broadcast_scope(request: web.Request) -> int | None:
    """The broadcast id a route acts on, if any (for the anchor ownership rule)."""
    match = request.match_info
    raw = match.get("broadcast_id")
    if raw is None and request.path.startswith("/api/broadcasts/"):
        raw = match.get("id")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return await handler(request)
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404 / 405: let the router answer
    declared = route_roles(request)
    if declared is None:
        logger.error("%s %s: no route table declares this route", request.method, request.path)
        raise ApiError(403, "undeclared_route", "this route declares no roles; refused")
    roles = declared
    token = bearer_token(request)
    state = request.app[AUTH]
    accounts = state.accounts
    if accounts is None:
        raise ApiError(503, "starting", "the control plane is starting")
    principal: Principal | None = None
    if token is not None:
        resolved = await accounts.resolve(token)
        if isinstance(resolved, str):
            if PUBLIC not in roles:
                messages = {
                    "expired": ("token_expired", "the token has expired; sign in again"),
                    "revoked": ("token_revoked", "the token was revoked"),
                }
                code, message = messages.get(resolved, ("invalid_token", "unknown token"))
                raise _unauthorized(code, message)
        else:
            principal = resolved
    request[PRINCIPAL] = principal
    request[CALLER] = (
        Caller(principal.user.id, principal.user.username, principal.role.value)
        if principal is not None
        else None
    )
    if PUBLIC in roles:
        return await handler(request)
    if principal is None:
        raise _unauthorized("unauthorized", "sign in: send Authorization: Bearer <token>")
    if not allows(roles, principal):
        raise ApiError(
            403,
            "forbidden",
            f"this needs the role {' or '.join(r for r in roles)}; you are {principal.role.value}",
        )
    if principal.role is Role.ANCHOR:
        bid = broadcast_scope(request)
        if bid is not None:
            check = state.owner_check
            if check is None or not await check(bid, principal.user.id):
                raise ApiError(404, "not_found", f"no broadcast {bid}")
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    """The signed-in caller (the middleware guarantees one on non-public routes)."""
    p: Principal | None = request.get(PRINCIPAL)
    if p is None:
        raise _unauthorized("unauthorized", "sign in: send Authorization: Bearer <token>")
    return p
