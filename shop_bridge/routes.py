"""The shop's routes: for each one its method, path, handler, roles and API doc, in one
table (:class:`core.routes.RouteTable`, installed by :func:`shop_bridge.setup`).

The roles are what the control plane's auth middleware enforces: buyer-facing calls are
``public`` (the buyer is named by their viewer token, ``X-Viewer-Token``, or by an operator
token naming ``user_id``: :func:`shop_bridge.api.buyer`), the payment notification is
``public`` because it is authenticated by its HMAC signature, the rest is for operators
and anchors. The request and response schemas are in :mod:`shop_bridge.openapi`.

aiohttp tries routes sharing a prefix in the order they were added: the buy route comes
first under ``/api/flash-sales/`` (a flash-sale burst is thousands of buys a second).
"""

from __future__ import annotations

from core.routes import Op, OpDoc, RouteTable
from shop_bridge import (
    aftersales_routes,
    api,
    broadcast_api,
    image_routes,
    money_api,
    order_core_routes,
    owners,
    voucher_routes,
)
from shop_bridge.openapi import ID, OPENAPI_COMPONENTS, J, int_schema, ref
from shop_bridge.state import OrderState

OPERATOR = ["operator"]
STAFF = ["operator", "anchor"]
PUBLIC = ["public"]

ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
VIEWER_TOKEN = {
    "name": "X-Viewer-Token",
    "in": "header",
    "required": False,
    "description": "The buyer's viewer token (issued by the control plane).",
    "schema": {"type": "string"},
}


def _doc(
    summary: str,
    roles: list[str],
    ok: J | None = None,
    body: J | None = None,
    status: str = "200",
    errors: tuple[int, ...] = (400, 404),
    params: list[J] | None = None,
    *,
    buyer: bool = False,
    body_required: bool = True,
    operation_id: str = "",
    also_ok: tuple[str, ...] = (),
) -> OpDoc:
    """An operation's doc: ``ok`` the success schema (status ``status``, and ``also_ok``:
    e.g. ``"200"`` for a repeat answered with what the first call made), ``body`` the
    request's, ``errors`` the documented error statuses (with a body, 413 too: every body
    is read with a size cap); ``buyer`` for calls a buyer makes with their viewer token."""
    params = [*(params or []), *([VIEWER_TOKEN] if buyer else [])]
    extra: J = {}
    if params:
        extra["parameters"] = params
    if body is not None:
        extra["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    responses: J = {}
    for code_ok in (status, *also_ok):
        responses[code_ok] = {"description": "OK"}
        if ok is not None:
            responses[code_ok]["content"] = {"application/json": {"schema": ok}}
    if body is not None and 413 not in errors:
        errors = (*errors, 413)
    for code in (*errors, *((401, 403) if buyer else ())):
        responses[str(code)] = {"description": "error", **ERR}
    extra["responses"] = responses
    if roles != PUBLIC:
        extra["security"] = [{"bearer": []}]
    return OpDoc(
        summary, "shop", tuple(roles), ok=int(status), operation_id=operation_id, extra=extra
    )


def _path(name: str, schema: J | None = None) -> J:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: J) -> J:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PID = _path("product_id", {"type": "integer"})
SKU = _path("sku_id", {"type": "integer"})
BID = _path("broadcast_id", {"type": "integer", "minimum": 1})
SID = _path("sale_id", {"type": "integer"})
OID = _path("order_id")
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 200})

ROUTES = RouteTable(
    "shop_bridge",
    [
        Op(
            "POST",
            "/api/products",
            api.create_product,
            _doc("Create a product", OPERATOR, ref("ShopProduct"), ref("ShopProductIn"), "201"),
        ),
        Op(
            "GET",
            "/api/products",
            api.list_products,
            _doc(
                "List products (SPU with SKUs)",
                PUBLIC,
                {"type": "object"},
                params=[LIMIT, _query("after", {"type": "integer"})],
            ),
        ),
        Op(
            "GET",
            "/api/products/{product_id}",
            api.get_product,
            _doc("A product", PUBLIC, ref("ShopProduct"), params=[PID]),
        ),
        Op(
            "PATCH",
            "/api/products/{product_id}",
            api.update_product,
            _doc(
                "Change a product", OPERATOR, ref("ShopProduct"), {"type": "object"}, params=[PID]
            ),
        ),
        Op(
            "POST",
            "/api/products/{product_id}/skus",
            api.add_sku,
            _doc("Add a SKU", OPERATOR, ref("ShopProduct"), ref("ShopSkuIn"), "201", params=[PID]),
        ),
        Op(
            "PATCH",
            "/api/skus/{sku_id}",
            api.update_sku,
            _doc(
                "Change a SKU (price, stock, or stock_delta)",
                OPERATOR,
                ref("ShopSku"),
                {"type": "object"},
                errors=(400, 404, 409),
                params=[SKU],
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/shop",
            broadcast_api.get_broadcast_shop,
            _doc(
                "What the shop knows of a broadcast (anchor, room, state; known: it sells for it)",
                OPERATOR,
                {"type": "object"},
                params=[BID],
            ),
        ),
        Op(
            "PUT",
            "/api/broadcasts/{broadcast_id}/shop",
            broadcast_api.put_broadcast,
            _doc(
                "Tell the shop a broadcast's anchor and danmaku room",
                OPERATOR,
                {"type": "object"},
                {
                    "type": "object",
                    "required": ["anchor_id"],
                    "properties": {"anchor_id": ID, "room": {"type": "string"}},
                },
                params=[BID],
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/shelf",
            broadcast_api.get_shelf,
            _doc("The goods shelf in display order", PUBLIC, ref("ShopShelf"), params=[BID]),
        ),
        Op(
            "PUT",
            "/api/broadcasts/{broadcast_id}/shelf",
            broadcast_api.put_shelf,
            _doc(
                "Replace the goods shelf (order = display order; 404 broadcast_not_found, 409 "
                "broadcast_banned or broadcast_cancelled, 422 unknown_product)",
                STAFF,
                ref("ShopShelf"),
                {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "maxItems": 500,
                            "items": {
                                "type": "object",
                                "required": ["product_id"],
                                "properties": {
                                    "product_id": int_schema(1),
                                    "on_shelf": {"type": "boolean", "default": True},
                                },
                            },
                        }
                    },
                },
                errors=(400, 404, 409, 422),
                params=[BID],
            ),
            owner=owners.BROADCAST,
        ),
        Op(
            "PATCH",
            "/api/broadcasts/{broadcast_id}/shelf/{product_id}",
            broadcast_api.patch_shelf_item,
            _doc(
                "Put a product on or off shelf (404 broadcast_not_found or "
                "shelf_item_not_found, 409 broadcast_banned or broadcast_cancelled, as when "
                "replacing the shelf)",
                STAFF,
                ref("ShopShelf"),
                {
                    "type": "object",
                    "required": ["on_shelf"],
                    "properties": {"on_shelf": {"type": "boolean"}},
                },
                errors=(400, 404, 409),
                params=[BID, PID],
            ),
            owner=owners.BROADCAST,
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/card",
            broadcast_api.get_card,
            _doc("The card being explained now", PUBLIC, {"type": "object"}, params=[BID]),
        ),
        Op(
            "POST",
            "/api/broadcasts/{broadcast_id}/card",
            broadcast_api.push_card,
            _doc(
                "Push the 'now explaining' card (replaces the current one; event card.pushed)",
                STAFF,
                ref("ShopCard"),
                {
                    "type": "object",
                    "required": ["product_id"],
                    "properties": {
                        "product_id": int_schema(1),
                        "sku_id": int_schema(1),
                        "flash_sale_id": int_schema(1),
                    },
                },
                "201",
                errors=(400, 404, 409, 422),
                params=[BID],
            ),
            owner=owners.CARD,
        ),
        Op(
            "DELETE",
            "/api/broadcasts/{broadcast_id}/card",
            broadcast_api.clear_card,
            _doc("Clear the card (event card.cleared)", STAFF, ref("ShopCard"), params=[BID]),
            owner=owners.BROADCAST,
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/cards",
            broadcast_api.card_history,
            _doc(
                "History of explained products, newest first",
                STAFF,
                {"type": "object"},
                params=[BID, LIMIT],
            ),
            owner=owners.BROADCAST,
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/sales",
            broadcast_api.sales,
            _doc(
                "Sales of a broadcast: GMV, orders, buyers, card conversion, per product",
                STAFF,
                ref("ShopSales"),
                params=[BID],
            ),
            owner=owners.BROADCAST,
        ),
        Op(
            "GET",
            "/api/flash-sales",
            broadcast_api.list_flash_sales,
            _doc(
                "Flash sales of a broadcast (operators: of all without broadcast_id), newest "
                "first, with remaining stock and status",
                STAFF,
                {"type": "object"},
                params=[
                    _query("broadcast_id", {"type": "integer", "minimum": 1}),
                    LIMIT,
                ],
            ),
            owner=owners.SALES_LIST,
        ),
        Op(
            "POST",
            "/api/flash-sales",
            api.create_flash_sale,
            _doc(
                "Create a flash sale (its stock is taken from the SKU's: 409 insufficient_stock; "
                "404 broadcast_not_found; 409 broadcast_ended, broadcast_banned, "
                "broadcast_cancelled, not_on_shelf, off_shelf; 422 unknown_sku)",
                STAFF,
                ref("ShopFlashSale"),
                ref("ShopFlashSaleIn"),
                "201",
                errors=(400, 404, 409, 422),
            ),
            owner=owners.NEW_SALE,
        ),
        Op(
            "POST",
            "/api/flash-sales/{sale_id}/buy",
            api.buy,
            _doc(
                "Buy in a flash sale (201 new order, 200 same idempotency_key again; 409 sold_out, "
                "limit_reached, sale_not_started, sale_ended, sale_closed; 422 unknown_address; "
                "403 blocked or account too new, 429 rate_limited with Retry-After; 503 retry "
                "with the same key)",
                PUBLIC,
                ref("ShopOrder"),
                ref("ShopBuyIn"),
                "201",
                errors=(400, 404, 409, 413, 422, 429, 503),
                params=[SID],
                buyer=True,
                also_ok=("200",),
            ),
        ),
        Op(
            "GET",
            "/api/flash-sales/{sale_id}",
            api.get_flash_sale,
            _doc(
                "A flash sale with its remaining stock", PUBLIC, ref("ShopFlashSale"), params=[SID]
            ),
        ),
        Op(
            "PATCH",
            "/api/flash-sales/{sale_id}",
            api.edit_flash_sale,
            _doc(
                "Change a live flash sale: end time, per-user limit, total stock "
                "(event flash_sale.updated; 409 sale_closed, sale_over, stock_held, "
                "insufficient_stock)",
                STAFF,
                ref("ShopFlashSale"),
                ref("ShopFlashSaleEdit"),
                errors=(400, 404, 409, 413),
                params=[SID],
            ),
            owner=owners.SALE,
        ),
        Op(
            "POST",
            "/api/flash-sales/{sale_id}/close",
            api.close_flash_sale,
            _doc(
                "Close a flash sale now: buys refused (409 sale_closed), placed orders stay valid, "
                "unsold stock goes back to the SKU (events flash_sale.closed, flash_sale.settled)",
                STAFF,
                ref("ShopFlashSale"),
                ref("ShopFlashSaleClose"),
                errors=(400, 404, 409, 413),
                params=[SID],
                body_required=False,
            ),
            owner=owners.SALE,
        ),
        Op(
            "GET",
            "/api/flash-sales/{sale_id}/audit",
            api.audit_flash_sale,
            _doc("Compare Redis stock with DB orders", OPERATOR, {"type": "object"}, params=[SID]),
        ),
        Op(
            "POST",
            "/api/orders",
            api.place_order,
            _doc(
                "Place an order at list price, less an optional coupon (stock from the SKU; "
                "an order with nothing left to pay is paid at once; 200 the same "
                "idempotency_key again; 404 broadcast_not_found; 403 blocked, 429 rate_limited "
                "with Retry-After)",
                PUBLIC,
                ref("ShopOrder"),
                ref("ShopOrderIn"),
                "201",
                errors=(400, 404, 409, 413, 422, 429),
                buyer=True,
                also_ok=("200",),
            ),
        ),
        Op(
            "GET",
            "/api/orders",
            api.list_orders,
            _doc(
                "List orders, newest first: an operator all of them, an anchor those of "
                "their own broadcasts, a buyer (viewer token) only their own, a moderator "
                "none (403); filter by broadcast, state, user; page with next_cursor",
                PUBLIC,
                {"type": "object"},
                params=[
                    LIMIT,
                    _query("user_id", ID),
                    _query("broadcast_id", ID),
                    _query("state", {"type": "string"}),
                    _query("before_ms", {"type": "integer"}),
                    _query("cursor", {"type": "string"}),
                ],
                buyer=True,
            ),
        ),
        Op(
            "GET",
            "/api/orders/{order_id}",
            api.get_order,
            _doc(
                "An order with its state history",
                PUBLIC,
                ref("ShopOrder"),
                params=[OID],
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/orders/{order_id}/pay",
            api.pay_order,
            _doc(
                "Start paying: creates the payment at the provider",
                PUBLIC,
                {"type": "object"},
                errors=(404, 409, 503),
                params=[OID],
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/orders/{order_id}/cancel",
            api.cancel_order,
            _doc(
                "Cancel an unpaid order (after the provider closes the payment)",
                PUBLIC,
                ref("ShopOrder"),
                errors=(404, 409, 503),
                params=[OID],
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/orders/{order_id}/ship",
            api.mover(OrderState.SHIPPED, "shipped"),
            _doc(
                "Mark shipped",
                OPERATOR,
                ref("ShopOrder"),
                errors=(404, 409),
                params=[OID],
                operation_id="ship_order",
            ),
        ),
        Op(
            "POST",
            "/api/orders/{order_id}/complete",
            api.mover(OrderState.COMPLETED, "completed"),
            _doc(
                "Mark completed",
                OPERATOR,
                ref("ShopOrder"),
                errors=(404, 409),
                params=[OID],
                operation_id="complete_order",
            ),
        ),
        Op(
            "POST",
            "/api/orders/{order_id}/refund",
            money_api.refund_order,
            _doc(
                "Refund a paid or shipped order, whole or partly, with a reason (409 "
                "refund_exceeds_paid, refund_pending, nothing_to_refund); the stock goes back "
                "only with a whole refund of an order never shipped",
                OPERATOR,
                ref("ShopOrder"),
                ref("ShopRefundIn"),
                errors=(400, 404, 409),
                params=[OID],
                body_required=False,
            ),
        ),
        Op(
            "POST",
            api.NOTIFY_PATH,
            api.payment_notify,
            _doc(
                "Payment notification from the provider (WeChat-Pay-v3-style headers, HMAC-SHA256)",
                PUBLIC,
                {"type": "object"},
                {"type": "object"},
                errors=(400, 401, 404, 413),
                params=[
                    {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                    for h in ("Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature")
                ],
            ),
        ),
        Op(
            "GET",
            "/api/shop/payments/notifications",
            api.list_notifications,
            _doc(
                "Received payment notifications and their outcome (accepted, duplicate, forged...)",
                OPERATOR,
                {"type": "object"},
                params=[LIMIT, _query("order_id", ID)],
            ),
        ),
        Op(
            "POST",
            "/api/lottery/prizes",
            api.grant_prize,
            _doc(
                "Grant a lottery prize (same payload as the lottery.prize event; exactly once: "
                "200 with duplicate true for a grant already made)",
                OPERATOR,
                {"type": "object"},
                {"type": "object"},
                "201",
                errors=(400,),
                also_ok=("200",),
            ),
        ),
        Op(
            "POST",
            "/api/coupons",
            money_api.create_coupons,
            _doc(
                "Give coupons: to user_id, or one to each of user_ids (a batch, all or "
                "nothing); idempotency_key answers an exact repeat with the same coupons "
                "(200), a repeat with other users, value, broadcast or note 409 "
                "idempotency_key_reused (nothing given)",
                OPERATOR,
                {"type": "object"},
                ref("ShopCouponsIn"),
                "201",
                errors=(400, 409),
                also_ok=("200",),
            ),
        ),
        Op(
            "GET",
            "/api/users/{user_id}/coupons",
            api.coupons,
            _doc(
                "A user's coupons",
                PUBLIC,
                {"type": "object"},
                params=[_path("user_id"), LIMIT],
                buyer=True,
            ),
        ),
        *order_core_routes.ops(_doc, _path, _query),
        *image_routes.ops(_doc, _path, _query),
        *voucher_routes.ops(_doc, _path, _query),
        *aftersales_routes.ops(_doc, _path, _query),
    ],
    schemas=OPENAPI_COMPONENTS,
)
