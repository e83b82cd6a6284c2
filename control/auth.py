"""Who may call what under ``/api/``: one middleware for every package's routes.

A route's roles come from, first match wins:

1. the handler's ``__berrylive_roles__`` attribute (a tuple of role names; set it with
   :func:`requires`, or directly in a package that must not import ``control``);
2. the merged OpenAPI spec: the operation's ``x-roles`` list (``<package>/openapi.py``);
3. otherwise ``("operator",)``: an undeclared route is for operators only.

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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from control.accounts import Accounts, Principal, Role
from core.http import CALLER, ApiError, Caller

logger = logging.getLogger(__name__)

PUBLIC = "public"
ANY = "any"
ROLE_NAMES = frozenset({PUBLIC, ANY, *(r.value for r in Role)})

PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("berrylive.principal")
OwnerCheck = Callable[[int, int], Awaitable[bool]]


@dataclass
class AuthState:
    """What the middleware needs; filled when the control plane starts."""

    role_table: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    accounts: Accounts | None = None
    owner_check: OwnerCheck | None = None


AUTH: web.AppKey[AuthState] = web.AppKey("berrylive.control.auth", AuthState)

F = TypeVar("F", bound=Callable[..., Any])


def requires(*roles: str) -> Callable[[F], F]:
    """Declare the roles a handler accepts: ``@requires("operator", "moderator")``."""
    bad = set(roles) - ROLE_NAMES
    if bad or not roles:
        raise ValueError(f"unknown role(s) {sorted(bad)}; use {sorted(ROLE_NAMES)}")

    def mark(fn: F) -> F:
        fn.__berrylive_roles__ = tuple(roles)  # type: ignore[attr-defined]
        return fn

    return mark


def roles_from_spec(paths: dict[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(METHOD, /path/{template}) -> roles`` from the ``x-roles`` of each operation."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method, op in item.items():
            if isinstance(op, dict) and isinstance(op.get("x-roles"), list):
                roles = tuple(str(r) for r in op["x-roles"] if str(r) in ROLE_NAMES)
                if roles:
                    table[(method.upper(), path)] = roles
    return table


def route_roles(request: web.Request) -> tuple[str, ...]:
    match = request.match_info
    handler: Any = match.handler
    roles = getattr(handler, "__berrylive_roles__", None)
    if roles is None:
        # class-based views and partials keep the attribute on the wrapped function
        roles = getattr(getattr(handler, "func", None), "__berrylive_roles__", None)
    if roles is not None:
        return tuple(roles)
    route = match.route
    resource = route.resource
    canonical = resource.canonical if resource is not None else request.path
    state = request.app.get(AUTH)
    table = state.role_table if state is not None else {}
    method = request.method.upper()
    if method == "HEAD":
        method = "GET"
    return table.get((method, canonical), (Role.OPERATOR.value,))


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
    roles = route_roles(request)
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
