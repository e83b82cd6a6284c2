"""REST handlers of the shop under ``/api/``: decode, validate strictly, call the part of
the service concerned. Which route reaches which handler, with its roles and API doc, is
the table in :mod:`shop_bridge.routes`.

Errors use the shared shape ``{"error": {"code", "message"}}`` (core.http). The acting user
is ``request["user"]`` when an auth middleware set it (control will), else the body's or
query's ``user_id`` for buyer calls, else ``"operator"`` for operator calls.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from core.http import ApiError, caller, read_json
from core.runtime import RUNTIME
from core.tokens import TokenError, verify_token
from shop_bridge import broadcast_ids, order_listing
from shop_bridge.aftersales_state import IllegalAfterSalesMove
from shop_bridge.errors import ShopError, invalid, not_found
from shop_bridge.order_extras import EXTRA_FIELDS as EXTRAS
from shop_bridge.order_extras import order_extras
from shop_bridge.service import ShopService
from shop_bridge.state import IllegalTransition, OrderState
from shop_bridge.validate import ID_RE, Body, check_ident, query_int
from shop_bridge.views import order_view

logger = logging.getLogger(__name__)

SHOP: web.AppKey[ShopService] = web.AppKey("berrylive.shop", ShopService)
MAX_BODY: web.AppKey[int] = web.AppKey("berrylive.shop.max_body", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NOTIFY_PATH = "/api/shop/payments/notify"


def api(fn: Handler) -> Handler:
    """Map domain refusals to the standard JSON error shape."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ShopError as exc:
            raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from None
        except (RedisError, DBAPIError) as exc:
            logger.error("%s %s: storage unavailable: %s", request.method, request.path, exc)
            raise ApiError(503, "unavailable", "storage unavailable; retry shortly") from None
        except (IllegalTransition, IllegalAfterSalesMove) as exc:  # a state table refused
            raise ApiError(
                409,
                "illegal_transition",
                str(exc),
                state=exc.current.value,
                target=exc.target.value,
            ) from None

    return wrapper


def shop_service(request: web.Request) -> ShopService:
    """The shop of the app handling ``request``."""
    return request.app[SHOP]


async def read_body(request: web.Request, allowed: set[str]) -> Body:
    """The request's JSON object (size-capped), with only the ``allowed`` fields."""
    return Body(await read_json(request, request.app[MAX_BODY]), allowed)


def _signed_in(request: web.Request) -> Any:
    """The caller set by an auth middleware: ``request["user"]``, else the control plane's
    :class:`core.http.Caller`."""
    user = request.get("user")
    if user is not None:
        return user
    return caller(request)


def _request_user(request: web.Request) -> str | None:
    user = _signed_in(request)
    if user is None:
        return None
    if isinstance(user, dict):
        user = user.get("id")
    else:
        user = getattr(user, "username", None) or getattr(user, "id", user)
    return str(user)[:64] if user else None


VIEWER_TOKEN_HEADER = "X-Viewer-Token"


def _viewer_uid(request: web.Request) -> str | None:
    """The user id of a valid viewer token in ``X-Viewer-Token`` (None without one)."""
    raw = request.headers.get(VIEWER_TOKEN_HEADER)
    if raw is None:
        return None
    try:
        return verify_token(request.app[RUNTIME].secret, raw).user_id
    except TokenError as exc:
        raise ShopError(401, "invalid_viewer_token", f"viewer token refused: {exc}") from None


def _is_operator(request: web.Request) -> bool:
    who = caller(request)
    return who is not None and who.role == "operator"


def buyer(request: web.Request, body: Body | None = None) -> str:
    """Who buys. A buyer's app sends the user's viewer token (``X-Viewer-Token``, issued by
    the control plane); a trusted backend holding an operator API token names ``user_id``.
    Nobody else can buy in a user's name, so per-user limits cannot be dodged by
    inventing user ids."""
    named = str(body.ident("user_id")) if body is not None and body.has("user_id") else None
    viewer = _viewer_uid(request)
    if viewer is not None:
        if named is not None and named != viewer:
            raise ShopError(403, "forbidden", "user_id does not match the viewer token")
        return viewer
    if _is_operator(request):
        if named is None:
            raise ShopError(400, "missing_field", "user_id: is required (buying for a user)")
        return named
    raise ShopError(
        401,
        "unauthorized",
        f"buying needs the buyer's viewer token ({VIEWER_TOKEN_HEADER}) "
        "or an operator API token naming user_id",
    )


def order_owner(request: web.Request) -> str | None:
    """For buyer-facing order routes: the viewer's user id (they see only their own
    orders), or None for an operator (any order). Anyone else: 401."""
    viewer = _viewer_uid(request)
    if viewer is not None:
        return viewer
    if _is_operator(request):
        return None
    raise ShopError(401, "unauthorized", f"send the buyer's viewer token ({VIEWER_TOKEN_HEADER})")


def operator(request: web.Request) -> str:
    return _request_user(request) or "operator"


def int_path(request: web.Request, name: str) -> int:
    """The integer path parameter ``name`` (404 when it is not one)."""
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 12:
        raise ShopError(404, "not_found", f"{name} {raw[:20]!r} does not exist")
    return int(raw)


def ident_path(request: web.Request, name: str) -> str:
    """The identifier path parameter ``name`` (404 when it is not one)."""
    raw = request.match_info[name]
    if not ID_RE.match(raw):
        raise ShopError(404, "not_found", f"{name} {raw[:20]!r} is not a valid identifier")
    return raw


def state_query(query: Mapping[str, str]) -> str | None:
    """The ``state`` filter of an order listing or export (None: any; 400 if unknown)."""
    state = query.get("state")
    if state is not None and state not in {s.value for s in OrderState}:
        raise invalid("state", f"unknown state {state[:30]!r}")
    return state


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# -- products -------------------------------------------------------------------------

SKU_FIELDS = {"code", "specs", "price_fen", "stock"}


def _sku(body: Body) -> dict[str, Any]:
    return {
        "code": body.text("code", max_len=64, default=""),
        "specs": body.specs("specs", default={}),
        "price_fen": body.integer("price_fen", lo=0, hi=10**10),
        "stock": body.integer("stock", lo=0, hi=10**9),
    }


@api
async def create_product(request: web.Request) -> web.Response:
    body = await read_body(request, {"title", "description", "images", "page_path", "skus"})
    skus = body.objects("skus", min_items=1, max_items=100)
    data = {
        "title": body.text("title", max_len=200),
        "description": body.text("description", max_len=5000, min_len=0, default=""),
        "images": body.str_list("images", max_items=20, max_len=1024, default=[]),
        "page_path": body.text("page_path", max_len=512, min_len=0, default=""),
        "skus": [_sku(Body(s, SKU_FIELDS, f"skus[{i}]")) for i, s in enumerate(skus)],
    }
    return json_reply(await shop_service(request).catalog.create_product(data), 201)


@api
async def list_products(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 50, 1, 200)
    after = query_int(request.query, "after", 0, 0, 10**12)
    items = await shop_service(request).catalog.list_products(limit, after)
    return json_reply(
        {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}
    )


@api
async def get_product(request: web.Request) -> web.Response:
    pid = int_path(request, "product_id")
    product = await shop_service(request).catalog.get_product(pid)
    if product is None:
        raise ShopError(404, "product_not_found", f"no product {pid}")
    return json_reply(product)


@api
async def update_product(request: web.Request) -> web.Response:
    pid = int_path(request, "product_id")
    body = await read_body(request, {"title", "description", "images", "page_path"})
    changes: dict[str, Any] = {}
    if body.has("title"):
        changes["title"] = body.text("title", max_len=200)
    if body.has("description"):
        changes["description"] = body.text("description", max_len=5000, min_len=0)
    if body.has("images"):
        changes["images"] = body.str_list("images", max_items=20, max_len=1024)
    if body.has("page_path"):
        changes["page_path"] = body.text("page_path", max_len=512, min_len=0)
    if not changes:
        raise invalid("body", "nothing to change")
    return json_reply(await shop_service(request).catalog.update_product(pid, changes))


@api
async def add_sku(request: web.Request) -> web.Response:
    pid = int_path(request, "product_id")
    body = await read_body(request, SKU_FIELDS)
    return json_reply(await shop_service(request).catalog.add_sku(pid, _sku(body)), 201)


@api
async def update_sku(request: web.Request) -> web.Response:
    sku_id = int_path(request, "sku_id")
    body = await read_body(request, {"code", "specs", "price_fen", "stock", "stock_delta"})
    if body.has("stock") and body.has("stock_delta"):
        raise invalid("stock_delta", "give stock or stock_delta, not both")
    changes: dict[str, Any] = {}
    if body.has("code"):
        changes["code"] = body.text("code", max_len=64, min_len=0)
    if body.has("specs"):
        changes["specs"] = body.specs("specs")
    if body.has("price_fen"):
        changes["price_fen"] = body.integer("price_fen", lo=0, hi=10**10)
    if body.has("stock"):
        changes["stock"] = body.integer("stock", lo=0, hi=10**9)
    if body.has("stock_delta"):
        changes["stock_delta"] = body.integer("stock_delta", lo=-(10**9), hi=10**9)
    if not changes:
        raise invalid("body", "nothing to change")
    return json_reply(await shop_service(request).catalog.update_sku(sku_id, changes))


# -- broadcasts: shop info, shelf, cards, sales ------------------------------------------


# -- flash sales ---------------------------------------------------------------------------


@api
async def create_flash_sale(request: web.Request) -> web.Response:
    body = await read_body(
        request,
        {
            "broadcast_id",
            "sku_id",
            "sale_price_fen",
            "sale_stock",
            "per_user_limit",
            "starts_at",
            "ends_at",
            "show_card",
        },
    )
    show_card = body.boolean("show_card", default=False)
    data = {
        "broadcast_id": broadcast_ids.from_body(body),
        "sku_id": body.integer("sku_id", lo=1),
        "sale_price_fen": body.integer("sale_price_fen", lo=0, hi=10**10),
        "sale_stock": body.integer("sale_stock", lo=1, hi=100_000),
        "per_user_limit": body.integer("per_user_limit", lo=1, hi=1000, default=1),
        "starts_ms": body.time_ms("starts_at"),
        "ends_ms": body.time_ms("ends_at"),
    }
    svc = shop_service(request)
    sale = await svc.flash.create(data, operator(request))
    if show_card:  # its card in the room at once (the sale's product, SKU and id)
        sale = {
            **sale,
            "card": await svc.shelf.push_card(
                data["broadcast_id"],
                sale["product_id"],
                sale["sku_id"],
                sale["id"],
                operator(request),
            ),
        }
    return json_reply(sale, 201)


@api
async def get_flash_sale(request: web.Request) -> web.Response:
    return json_reply(await shop_service(request).flash.get(int_path(request, "sale_id")))


@api
async def close_flash_sale(request: web.Request) -> web.Response:
    sale_id = int_path(request, "sale_id")
    reason = ""
    if request.can_read_body:
        body = await read_body(request, {"reason"})
        reason = body.text("reason", max_len=200, default="")
    view = await shop_service(request).sale_admin.close(
        sale_id, operator(request), reason or "closed by the seller"
    )
    return json_reply(view)


@api
async def edit_flash_sale(request: web.Request) -> web.Response:
    sale_id = int_path(request, "sale_id")
    body = await read_body(request, {"ends_at", "per_user_limit", "sale_stock"})
    changes: dict[str, Any] = {}
    if body.has("ends_at"):
        changes["ends_ms"] = body.time_ms("ends_at")
    if body.has("per_user_limit"):
        changes["per_user_limit"] = body.integer("per_user_limit", lo=1, hi=1000)
    if body.has("sale_stock"):
        changes["sale_stock"] = body.integer("sale_stock", lo=1, hi=100_000)
    if not changes:
        raise invalid("body", "nothing to change (ends_at, per_user_limit, sale_stock)")
    return json_reply(
        await shop_service(request).sale_admin.edit(sale_id, changes, operator(request))
    )


@api
async def audit_flash_sale(request: web.Request) -> web.Response:
    return json_reply(await shop_service(request).upkeep.audit_sale(int_path(request, "sale_id")))


@api
async def buy(request: web.Request) -> web.Response:
    sale_id = int_path(request, "sale_id")
    svc = shop_service(request)
    body = await read_body(request, {"quantity", "idempotency_key", "channel", "user_id", *EXTRAS})
    user = buyer(request, body)
    qty = body.integer("quantity", lo=1, hi=svc.ctx.config.max_quantity, default=1)
    key = body.ident("idempotency_key")
    channel = body.ident("channel", default="live")
    extra = await order_extras(request, svc, user, body, sale_id)
    order, created = await svc.flash.buy(sale_id, user, qty, key, channel, extra)
    return web.Response(  # orjson: the hot route's answer, ~10x cheaper than json.dumps
        body=orjson.dumps(order_view(order)),
        status=201 if created else 200,
        content_type="application/json",
        charset="utf-8",
    )


# -- orders ---------------------------------------------------------------------------------


@api
async def place_order(request: web.Request) -> web.Response:
    svc = shop_service(request)
    body = await read_body(
        request,
        {
            "sku_id",
            "quantity",
            "broadcast_id",
            "idempotency_key",
            "channel",
            "user_id",
            "coupon_id",
            *EXTRAS,
        },
    )
    user = buyer(request, body)
    order, created = await svc.checkout.place_order(
        user,
        body.integer("sku_id", lo=1),
        body.integer("quantity", lo=1, hi=svc.ctx.config.max_quantity),
        broadcast_ids.from_body(body, default=""),
        body.ident("idempotency_key"),
        body.ident("channel", default="live"),
        coupon_id=body.text("coupon_id", max_len=32, pattern=ID_RE, default=None),
        extra=await order_extras(request, svc, user, body),
    )
    return json_reply(order_view(order), 201 if created else 200)


@api
async def list_orders(request: web.Request) -> web.Response:
    """Who sees which orders: see :func:`order_listing.scope`."""
    q = request.query
    state = state_query(q)
    named = check_ident("user_id", q["user_id"]) if q.get("user_id") else None
    user, anchor = order_listing.scope(_viewer_uid(request), caller(request), named)
    limit = query_int(q, "limit", 50, 1, 200)
    orders = await shop_service(request).checkout.book.list_orders(
        user_id=user,
        broadcast_id=broadcast_ids.parse(q["broadcast_id"]) if q.get("broadcast_id") else None,
        anchor_id=anchor,
        state=state,
        limit=limit,
        before_ms=query_int(q, "before_ms", 0, 0, 10**14) or None,
        after=order_listing.parse_cursor(q.get("cursor")),
    )
    return json_reply(
        {
            "items": [order_view(o) for o in orders],
            "next_cursor": order_listing.next_cursor(orders, limit),
        }
    )


async def _own_order(request: web.Request) -> tuple[str, str | None]:
    """(order id, owner) after checking the caller may act on that order (404 otherwise)."""
    oid = ident_path(request, "order_id")
    owner = order_owner(request)
    if owner is not None:
        order = await shop_service(request).checkout.order(oid)
        if order["user_id"] != owner:
            raise not_found("order", oid)
    return oid, owner


async def _anchor_of_order(request: web.Request, oid: str) -> bool:
    """True if the signed-in caller is the anchor of the order's broadcast (the shop's
    broadcast -> anchor mapping, kept from control's events): decided from the order."""
    who = caller(request)
    if who is None or who.role != "anchor" or request.headers.get(VIEWER_TOKEN_HEADER):
        return False
    svc = shop_service(request)
    order = await svc.checkout.order(oid)
    row = await svc.shelf.fresh_row(order["broadcast_id"]) if order["broadcast_id"] else None
    if row is None or row["anchor_id"] != str(who.user_id):
        raise not_found("order", oid)  # someone else's show: as if it did not exist
    return True


@api
async def get_order(request: web.Request) -> web.Response:
    svc = shop_service(request)
    oid = ident_path(request, "order_id")
    if not await _anchor_of_order(request, oid):
        oid, _owner = await _own_order(request)
    detail = await svc.checkout.order_with_history(oid)
    return json_reply({**detail, "refunds": await svc.refunds.list(oid)})


@api
async def pay_order(request: web.Request) -> web.Response:
    oid, owner = await _own_order(request)
    return json_reply(await shop_service(request).checkout.start_payment(oid, owner))


@api
async def cancel_order(request: web.Request) -> web.Response:
    oid, owner = await _own_order(request)
    actor = owner or _request_user(request) or "operator"
    order = await shop_service(request).checkout.cancel_by_buyer(oid, actor)
    return json_reply(order_view(order))


def mover(target: OrderState, reason: str) -> Handler:
    """The handler of an operator's move of an order to ``target`` (ship, complete)."""

    @api
    async def handler(request: web.Request) -> web.Response:
        oid = ident_path(request, "order_id")
        order = await shop_service(request).checkout.move(oid, target, operator(request), reason)
        return json_reply(order_view(order))

    return handler


# -- payments, prizes -----------------------------------------------------------------------


async def payment_notify(request: web.Request) -> web.Response:
    svc = shop_service(request)
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    status, payload = await svc.notices.handle(request.headers, body, request.remote or "")
    return json_reply(payload, status)


@api
async def list_notifications(request: web.Request) -> web.Response:
    oid = request.query.get("order_id")
    if oid is not None:
        check_ident("order_id", oid)
    limit = query_int(request.query, "limit", 50, 1, 500)
    notices = shop_service(request).notices
    return json_reply(
        {"items": await notices.entries(oid, limit), "refused": notices.refused_summary()}
    )


@api
async def grant_prize(request: web.Request) -> web.Response:
    body = await read_body(
        request,
        {
            "lottery_id",
            "user_id",
            "broadcast_id",
            "grant_id",
            "prize",
            "prize_index",
            "room",
            "nick",
            "n",
            "mode",
            "title",
        },
    )
    body.ident("lottery_id")
    body.ident("user_id")
    result = await shop_service(request).prizes.grant(dict(body.data))
    return json_reply(result, 200 if result["duplicate"] else 201)


@api
async def coupons(request: web.Request) -> web.Response:
    uid = ident_path(request, "user_id")
    owner = order_owner(request)
    if owner is not None and owner != uid:
        raise ShopError(403, "forbidden", "a viewer sees only their own coupons")
    limit = query_int(request.query, "limit", 50, 1, 200)
    return json_reply({"items": await shop_service(request).checkout.coupons(uid, limit)})
