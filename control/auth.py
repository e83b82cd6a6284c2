"""Who may call what under ``/api/``: one middleware for every package's routes.

A route's roles are those its package declared in its route table
(:class:`core.routes.RouteTable`), recorded by ``install`` against the aiohttp route
object the request matched (:func:`core.routes.roles_of`). A route under ``/api/`` that
no table declares is refused (``403 undeclared_route``, logged as an error): nobody gets
a default.

Role names: ``operator``, ``anchor``, ``moderator``; ``public`` (no token needed) and
``any`` (any signed-in user). Operators pass every check.

Ownership is decided from the resource, never from the URL's shape: every route an
anchor, a moderator or ``any`` signed-in user may call declares an ``owner``
(:class:`core.routes.Owner`) that loads the resource and names the broadcast(s) the
request acts on (a sale -> its broadcast, a body's ``broadcast_id``, a danmaku room ->
its broadcast). Before the handler runs, :func:`check_owner` asks whether the principal
may act on them:

* operators: on everything;
* anchors: on their own broadcasts only (``anchor_id``); someone else's resource named
  in the path answers ``404``, a body or query pointing at someone else's broadcast
  ``403 not_yours``; a request across every broadcast (no filter) ``403``;
* moderators: on every broadcast (there is no per-broadcast assignment of moderators;
  their routes are danmaku moderation, notices, the audit log and read-only broadcast
  views).

A non-operator calling a route that declares no owner is refused (``403
undeclared_owner``, logged): nobody gets a default.

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
from core.routes import Scope, op_of, roles_of

logger = logging.getLogger(__name__)

PUBLIC = "public"
ANY = "any"
ROLE_NAMES = frozenset({PUBLIC, ANY, *(r.value for r in Role)})
if ROLE_NAMES != routes.ROLE_NAMES:  # pragma: no cover - a programming error
    raise ImportError("control.accounts.Role and core.routes.ROLE_NAMES disagree")

PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("berrylive.principal")
AnchorOf = Callable[[int], Awaitable[int | None]]
"""A broadcast id -> its anchor's user id (``None``: no such broadcast, or no anchor)."""
RoomBroadcast = Callable[[str], Awaitable[int | None]]
"""A danmaku room (``<app>/<stream>``) -> the id of the broadcast it belongs to."""


@dataclass
class AuthState:
    """What the middleware needs; filled when the control plane starts."""

    accounts: Accounts | None = None
    anchor_of: AnchorOf | None = None
    room_broadcast: RoomBroadcast | None = None


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


def _refuse(status: int, what: str) -> ApiError:
    if status == 404:
        return ApiError(404, "not_found", f"no {what}")
    return ApiError(403, "not_yours", f"{what} is not yours")


def _broadcast_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 15 else None


async def check_owner(state: AuthState, principal: Principal, scope: Scope, status: int) -> None:
    """Raise unless ``principal`` may act on every broadcast of ``scope`` (see above)."""
    if principal.role is Role.OPERATOR:
        return
    if scope.missing:
        raise ApiError(404, "not_found", f"no {scope.missing}")
    if principal.role is Role.MODERATOR:
        return  # no per-broadcast assignment of moderators: every broadcast
    if principal.role is not Role.ANCHOR:  # pragma: no cover - a role added later
        raise ApiError(403, "forbidden", f"no ownership rule for {principal.role.value}")
    if scope.everything:
        raise ApiError(403, "not_yours", "an anchor acts on their own broadcasts: name one of them")
    anchor_of, room_broadcast = state.anchor_of, state.room_broadcast
    if anchor_of is None or room_broadcast is None:
        raise ApiError(503, "starting", "the control plane is starting")
    wanted: list[tuple[int | None, str]] = [
        (_broadcast_id(raw), f"broadcast {raw[:40]}") for raw in sorted(scope.broadcasts)
    ]
    wanted += [(await room_broadcast(room), f"room {room[:80]}") for room in sorted(scope.rooms)]
    for bid, what in wanted:
        if bid is None or await anchor_of(bid) != principal.user.id:
            raise _refuse(status, what)


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
    if principal.role is not Role.OPERATOR:
        op = op_of(request)
        owner = op.owner if op is not None else None
        if owner is None:
            logger.error("%s %s: the route declares no owner", request.method, request.path)
            raise ApiError(
                403, "undeclared_owner", "this route declares whose resource it acts on; refused"
            )
        for resolve, status in owner.parts:
            await check_owner(state, principal, await resolve(request), status)
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    """The signed-in caller (the middleware guarantees one on non-public routes)."""
    p: Principal | None = request.get(PRINCIPAL)
    if p is None:
        raise _unauthorized("unauthorized", "sign in: send Authorization: Bearer <token>")
    return p
