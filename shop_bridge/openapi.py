"""The shop's part of the OpenAPI document (merged by ``control.openapi``).

``x-roles`` on each operation is what the control plane's auth middleware enforces:
buyer-facing calls are ``public`` for now (the buyer is named by ``user_id`` until viewer
accounts exist; order ids are unguessable), the payment notification is ``public`` because
it is authenticated by its HMAC signature, the rest is for operators and anchors.
"""

from __future__ import annotations

from typing import Any

J = dict[str, Any]

OPERATOR = ["operator"]
STAFF = ["operator", "anchor"]
PUBLIC = ["public"]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _int(lo: int = 0, hi: int | None = None, **kw: Any) -> J:
    out: J = {"type": "integer", "minimum": lo, **kw}
    if hi is not None:
        out["maximum"] = hi
    return out


ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,64}$"}
TIME = {
    "oneOf": [
        {"type": "string", "format": "date-time", "description": "ISO 8601 with offset"},
        {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
    ]
}

OPENAPI_COMPONENTS: J = {
    "ShopSkuIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["price_fen", "stock"],
        "properties": {
            "code": {"type": "string", "maxLength": 64},
            "specs": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 64},
                "maxProperties": 10,
                "example": {"colour": "red", "size": "M"},
            },
            "price_fen": _int(0, 10**10, description="price in fen (1 yuan = 100 fen)"),
            "stock": _int(0, 10**9),
        },
    },
    "ShopSku": {
        "type": "object",
        "properties": {
            "id": _int(1),
            "product_id": _int(1),
            "code": {"type": "string"},
            "specs": {"type": "object", "additionalProperties": {"type": "string"}},
            "price_fen": _int(0),
            "stock": _int(0),
        },
    },
    "ShopProductIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "skus"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": {"type": "string", "maxLength": 5000},
            "images": {"type": "array", "maxItems": 20, "items": {"type": "string"}},
            "page_path": {
                "type": "string",
                "maxLength": 512,
                "description": "mini-program page of the product",
            },
            "skus": {"type": "array", "minItems": 1, "maxItems": 100, "items": _ref("ShopSkuIn")},
        },
    },
    "ShopProduct": {
        "type": "object",
        "properties": {
            "id": _int(1),
            "title": {"type": "string"},
            "description": {"type": "string"},
            "images": {"type": "array", "items": {"type": "string"}},
            "page_path": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "skus": {"type": "array", "items": _ref("ShopSku")},
        },
    },
    "ShopShelf": {
        "type": "object",
        "properties": {
            "broadcast_id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "position": _int(0),
                        "on_shelf": {"type": "boolean"},
                        "product": _ref("ShopProduct"),
                    },
                },
            },
        },
    },
    "ShopCard": {
        "type": "object",
        "properties": {
            "id": _int(1),
            "broadcast_id": {"type": "string"},
            "room": {"type": "string"},
            "product_id": _int(1),
            "sku_id": {"type": "integer", "nullable": True},
            "flash_sale_id": {"type": "integer", "nullable": True},
            "pushed_by": {"type": "string"},
            "pushed_at": {"type": "string", "format": "date-time"},
            "cleared_at": {"type": "string", "format": "date-time", "nullable": True},
            "cleared_by": {"type": "string", "nullable": True},
        },
    },
    "ShopFlashSaleIn": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "broadcast_id",
            "sku_id",
            "sale_price_fen",
            "sale_stock",
            "starts_at",
            "ends_at",
        ],
        "properties": {
            "broadcast_id": ID,
            "sku_id": _int(1),
            "sale_price_fen": _int(0, 10**10),
            "sale_stock": _int(1, 100000),
            "per_user_limit": _int(1, 1000, default=1),
            "starts_at": TIME,
            "ends_at": TIME,
        },
    },
    "ShopFlashSale": {
        "type": "object",
        "properties": {
            "id": _int(1),
            "broadcast_id": {"type": "string"},
            "product_id": _int(1),
            "sku_id": _int(1),
            "sale_price_fen": _int(0),
            "sale_stock": _int(0),
            "remaining": {"type": "integer", "nullable": True},
            "per_user_limit": _int(1),
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "status": {"enum": ["scheduled", "open", "sold_out", "ended", "closed"]},
            "closed_at": {"type": "string", "format": "date-time", "nullable": True},
            "closed_by": {"type": "string", "nullable": True},
            "settled_at": {
                "type": "string",
                "format": "date-time",
                "nullable": True,
                "description": "when the unsold stock went back to the SKU (sale over)",
            },
            "returned_stock": _int(0, description="unsold units given back to the SKU"),
        },
    },
    "ShopFlashSaleEdit": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "description": (
            "What may change while a sale is live. sale_stock is the new total: more is "
            "taken from the SKU's stock (409 insufficient_stock), less gives unsold units "
            "back to it (409 stock_held below what is sold or held)."
        ),
        "properties": {
            "ends_at": TIME,
            "per_user_limit": _int(1, 1000),
            "sale_stock": _int(1, 100000),
        },
    },
    "ShopFlashSaleClose": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 200}},
    },
    "ShopBuyIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["idempotency_key"],
        "properties": {
            "quantity": _int(1, 99, default=1),
            "idempotency_key": {
                **ID,
                "description": "one per buyer tap; the same key again returns the same order",
            },
            "channel": {**ID, "default": "live"},
            "user_id": {**ID, "description": "the buyer (until viewer accounts exist)"},
        },
    },
    "ShopOrderIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sku_id", "quantity", "idempotency_key"],
        "properties": {
            "sku_id": _int(1),
            "quantity": _int(1, 99),
            "broadcast_id": ID,
            "idempotency_key": ID,
            "channel": ID,
            "user_id": ID,
            "coupon_id": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_.:@-]{1,32}$",
                "description": "one of the buyer's unused coupons, deducted from the amount",
            },
        },
    },
    "ShopOrder": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"enum": ["flash", "normal", "prize"]},
            "state": {
                "enum": [
                    "pending_payment",
                    "paid",
                    "shipped",
                    "completed",
                    "cancelled",
                    "refunding",
                    "refunded",
                ]
            },
            "user_id": {"type": "string"},
            "product_id": _int(1),
            "sku_id": _int(1),
            "flash_sale_id": {"type": "integer", "nullable": True},
            "quantity": _int(1),
            "unit_price_fen": _int(0),
            "amount_fen": _int(0, description="to pay: quantity x unit price - discount"),
            "discount_fen": _int(0),
            "coupon_id": {"type": "string", "nullable": True},
            "broadcast_id": {"type": "string"},
            "anchor_id": {"type": "string"},
            "card_id": {"type": "integer", "nullable": True},
            "channel": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "pay_before": {"type": "string", "format": "date-time", "nullable": True},
            "paid_at": {"type": "string", "format": "date-time", "nullable": True},
            "transaction_id": {"type": "string", "nullable": True},
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "from_state": {"type": "string", "nullable": True},
                        "to_state": {"type": "string"},
                        "actor": {"type": "string"},
                        "reason": {"type": "string"},
                        "at_ms": _int(0),
                    },
                },
            },
        },
    },
    "ShopSales": {
        "type": "object",
        "description": (
            "GMV counts paid, shipped, completed and refunding orders. card_orders: paid "
            "orders placed while a card of the ordered product was shown; card_conversion: "
            "card_orders / orders."
        ),
        "properties": {
            "broadcast_id": {"type": "string"},
            "gmv_fen": _int(0),
            "orders": _int(0),
            "orders_placed": _int(0),
            "buyers": _int(0),
            "refunded_fen": _int(0),
            "card_orders": _int(0),
            "card_conversion": {"type": "number"},
            "products": {"type": "array", "items": {"type": "object"}},
        },
    },
}

ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(
    summary: str,
    roles: list[str],
    ok: J | None = None,
    body: J | None = None,
    status: str = "200",
    errors: tuple[int, ...] = (400, 404),
    params: list[J] | None = None,
) -> J:
    op: J = {"summary": summary, "tags": ["shop"], "x-roles": roles}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    responses: J = {status: {"description": "OK"}}
    if ok is not None:
        responses[status]["content"] = {"application/json": {"schema": ok}}
    for code in errors:
        responses[str(code)] = {"description": "error", **ERR}
    op["responses"] = responses
    if roles != PUBLIC:
        op["security"] = [{"bearer": []}]
    return op


def _path(name: str, schema: J | None = None) -> J:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: J) -> J:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PID = _path("product_id", {"type": "integer"})
SKU = _path("sku_id", {"type": "integer"})
BID = _path("broadcast_id")
SID = _path("sale_id", {"type": "integer"})
OID = _path("order_id")
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 200})

OPENAPI_PATHS: J = {
    "/api/products": {
        "get": _op(
            "List products (SPU with SKUs)",
            PUBLIC,
            {"type": "object"},
            params=[LIMIT, _query("after", {"type": "integer"})],
        ),
        "post": _op(
            "Create a product", OPERATOR, _ref("ShopProduct"), _ref("ShopProductIn"), "201"
        ),
    },
    "/api/products/{product_id}": {
        "get": _op("A product", PUBLIC, _ref("ShopProduct"), params=[PID]),
        "patch": _op(
            "Change a product", OPERATOR, _ref("ShopProduct"), {"type": "object"}, params=[PID]
        ),
    },
    "/api/products/{product_id}/skus": {
        "post": _op(
            "Add a SKU", OPERATOR, _ref("ShopProduct"), _ref("ShopSkuIn"), "201", params=[PID]
        ),
    },
    "/api/skus/{sku_id}": {
        "patch": _op(
            "Change a SKU (price, stock, or stock_delta)",
            OPERATOR,
            _ref("ShopSku"),
            {"type": "object"},
            errors=(400, 404, 409),
            params=[SKU],
        ),
    },
    "/api/broadcasts/{broadcast_id}/shop": {
        "put": _op(
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
    },
    "/api/broadcasts/{broadcast_id}/shelf": {
        "get": _op("The goods shelf in display order", PUBLIC, _ref("ShopShelf"), params=[BID]),
        "put": _op(
            "Replace the goods shelf (order = display order)",
            STAFF,
            _ref("ShopShelf"),
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
                                "product_id": _int(1),
                                "on_shelf": {"type": "boolean", "default": True},
                            },
                        },
                    }
                },
            },
            errors=(400, 404, 422),
            params=[BID],
        ),
    },
    "/api/broadcasts/{broadcast_id}/shelf/{product_id}": {
        "patch": _op(
            "Put a product on or off shelf",
            STAFF,
            _ref("ShopShelf"),
            {
                "type": "object",
                "required": ["on_shelf"],
                "properties": {"on_shelf": {"type": "boolean"}},
            },
            params=[BID, PID],
        ),
    },
    "/api/broadcasts/{broadcast_id}/card": {
        "get": _op("The card being explained now", PUBLIC, {"type": "object"}, params=[BID]),
        "post": _op(
            "Push the 'now explaining' card (replaces the current one; event card.pushed)",
            STAFF,
            _ref("ShopCard"),
            {
                "type": "object",
                "required": ["product_id"],
                "properties": {
                    "product_id": _int(1),
                    "sku_id": _int(1),
                    "flash_sale_id": _int(1),
                },
            },
            "201",
            errors=(400, 404, 409, 422),
            params=[BID],
        ),
        "delete": _op("Clear the card (event card.cleared)", STAFF, _ref("ShopCard"), params=[BID]),
    },
    "/api/broadcasts/{broadcast_id}/cards": {
        "get": _op(
            "History of explained products, newest first",
            STAFF,
            {"type": "object"},
            params=[BID, LIMIT],
        ),
    },
    "/api/broadcasts/{broadcast_id}/sales": {
        "get": _op(
            "Sales of a broadcast: GMV, orders, buyers, card conversion, per product",
            STAFF,
            _ref("ShopSales"),
            params=[BID],
        ),
    },
    "/api/flash-sales": {
        "post": _op(
            "Create a flash sale (its stock is taken from the SKU's: 409 insufficient_stock)",
            STAFF,
            _ref("ShopFlashSale"),
            _ref("ShopFlashSaleIn"),
            "201",
            errors=(400, 409, 422),
        ),
    },
    "/api/flash-sales/{sale_id}": {
        "get": _op(
            "A flash sale with its remaining stock", PUBLIC, _ref("ShopFlashSale"), params=[SID]
        ),
        "patch": _op(
            "Change a live flash sale: end time, per-user limit, total stock "
            "(event flash_sale.updated; 409 sale_closed, sale_over, stock_held, "
            "insufficient_stock)",
            STAFF,
            _ref("ShopFlashSale"),
            _ref("ShopFlashSaleEdit"),
            errors=(400, 404, 409, 413),
            params=[SID],
        ),
    },
    "/api/flash-sales/{sale_id}/close": {
        "post": _op(
            "Close a flash sale now: buys refused (409 sale_closed), placed orders stay valid, "
            "unsold stock goes back to the SKU (events flash_sale.closed, flash_sale.settled)",
            STAFF,
            _ref("ShopFlashSale"),
            _ref("ShopFlashSaleClose"),
            errors=(400, 404, 409, 413),
            params=[SID],
        ),
    },
    "/api/flash-sales/{sale_id}/audit": {
        "get": _op(
            "Compare Redis stock with DB orders", OPERATOR, {"type": "object"}, params=[SID]
        ),
    },
    "/api/flash-sales/{sale_id}/buy": {
        "post": _op(
            "Buy in a flash sale (201 new order, 200 same idempotency_key again; 409 sold_out, "
            "limit_reached, sale_not_started, sale_ended, sale_closed; 503 retry with the same "
            "key)",
            PUBLIC,
            _ref("ShopOrder"),
            _ref("ShopBuyIn"),
            "201",
            errors=(400, 404, 409, 413, 503),
            params=[SID],
        ),
    },
    "/api/orders": {
        "get": _op(
            "List orders",
            OPERATOR,
            {"type": "object"},
            params=[
                LIMIT,
                _query("user_id", ID),
                _query("broadcast_id", ID),
                _query("state", {"type": "string"}),
                _query("before_ms", {"type": "integer"}),
            ],
        ),
        "post": _op(
            "Place an order at list price, less an optional coupon (stock from the SKU; "
            "an order with nothing left to pay is paid at once)",
            PUBLIC,
            _ref("ShopOrder"),
            _ref("ShopOrderIn"),
            "201",
            errors=(400, 409, 413, 422),
        ),
    },
    "/api/orders/{order_id}": {
        "get": _op("An order with its state history", PUBLIC, _ref("ShopOrder"), params=[OID]),
    },
    "/api/orders/{order_id}/pay": {
        "post": _op(
            "Start paying: creates the payment at the provider",
            PUBLIC,
            {"type": "object"},
            errors=(404, 409, 503),
            params=[OID],
        ),
    },
    "/api/orders/{order_id}/cancel": {
        "post": _op(
            "Cancel an unpaid order (after the provider closes the payment)",
            PUBLIC,
            _ref("ShopOrder"),
            errors=(404, 409, 503),
            params=[OID],
        ),
    },
    "/api/orders/{order_id}/ship": {
        "post": _op("Mark shipped", OPERATOR, _ref("ShopOrder"), errors=(404, 409), params=[OID]),
    },
    "/api/orders/{order_id}/complete": {
        "post": _op("Mark completed", OPERATOR, _ref("ShopOrder"), errors=(404, 409), params=[OID]),
    },
    "/api/orders/{order_id}/refund": {
        "post": _op(
            "Refund a paid or shipped order",
            OPERATOR,
            _ref("ShopOrder"),
            errors=(404, 409),
            params=[OID],
        ),
    },
    "/api/shop/payments/notify": {
        "post": _op(
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
    },
    "/api/shop/payments/notifications": {
        "get": _op(
            "Received payment notifications with their outcome (accepted, duplicate, forged...)",
            OPERATOR,
            {"type": "object"},
            params=[LIMIT, _query("order_id", ID)],
        ),
    },
    "/api/lottery/prizes": {
        "post": _op(
            "Grant a lottery prize (same payload as the lottery.prize event; exactly once)",
            OPERATOR,
            {"type": "object"},
            {"type": "object"},
            "201",
        ),
    },
    "/api/users/{user_id}/coupons": {
        "get": _op(
            "A user's coupons", PUBLIC, {"type": "object"}, params=[_path("user_id"), LIMIT]
        ),
    },
}

OPENAPI_PATHS["/api/flash-sales/{sale_id}/close"]["post"]["requestBody"]["required"] = False

# Buyer-facing operations: the buyer is identified by their viewer token (or an operator
# API token naming ``user_id``); see ``shop_bridge.api.buyer``.
VIEWER_TOKEN = {
    "name": "X-Viewer-Token",
    "in": "header",
    "required": False,
    "description": "The buyer's viewer token (issued by the control plane).",
    "schema": {"type": "string"},
}
BUYER_OPERATIONS = (
    ("post", "/api/flash-sales/{sale_id}/buy"),
    ("post", "/api/orders"),
    ("get", "/api/orders/{order_id}"),
    ("post", "/api/orders/{order_id}/pay"),
    ("post", "/api/orders/{order_id}/cancel"),
    ("get", "/api/users/{user_id}/coupons"),
)
for _method, _p in BUYER_OPERATIONS:
    _operation = OPENAPI_PATHS[_p][_method]
    _operation["parameters"] = [*_operation.get("parameters", []), VIEWER_TOKEN]
    for _code in (401, 403):
        _operation["responses"].setdefault(str(_code), {"description": "error", **ERR})
