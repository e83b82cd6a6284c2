"""The shop's request and response schemas (``components.schemas`` of the API document).

The operations (method, path, handler, roles, doc) are declared in one table,
:data:`shop_bridge.routes.ROUTES`, which carries these schemas.
"""

from __future__ import annotations

from typing import Any

J = dict[str, Any]


def ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def int_schema(lo: int = 0, hi: int | None = None, **kw: Any) -> J:
    out: J = {"type": "integer", "minimum": lo, **kw}
    if hi is not None:
        out["maximum"] = hi
    return out


ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,64}$"}
BROADCAST_ID: J = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 2**53 - 1},
        {"type": "string", "pattern": r"^[0-9]{1,16}$", "deprecated": True},
    ],
    "description": "control's broadcast id, an integer (a decimal string is accepted for one "
    "release)",
}
BROADCAST_ID_OUT: J = {"type": "integer", "nullable": True, "description": "control's broadcast id"}
TIME = {
    "oneOf": [
        {"type": "string", "format": "date-time", "description": "ISO 8601 with offset"},
        {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
    ]
}

RECIPIENT_IN: J = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "phone", "address"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 50},
        "phone": {
            "type": "string",
            "description": "a Chinese mobile number (11 digits, +86 allowed) or + and the "
            "international number (E.164)",
        },
        "address": {"type": "string", "minLength": 5, "maxLength": 200},
    },
}

ORDER_EXTRAS_IN: J = {
    "recipient": {**RECIPIENT_IN, "description": "who receives the goods (sealed at rest)"},
    "address_id": int_schema(1, description="one of the buyer's saved addresses instead"),
    "share": {
        "type": "string",
        "maxLength": 512,
        "description": "the share token of the link the buyer came through (or the "
        "X-Share-Token header): credits the order to its sharer",
    },
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
            "price_fen": int_schema(0, 10**10, description="price in fen (1 yuan = 100 fen)"),
            "stock": int_schema(0, 10**9),
        },
    },
    "ShopSku": {
        "type": "object",
        "properties": {
            "id": int_schema(1),
            "product_id": int_schema(1),
            "code": {"type": "string"},
            "specs": {"type": "object", "additionalProperties": {"type": "string"}},
            "price_fen": int_schema(0),
            "stock": int_schema(0),
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
            "skus": {"type": "array", "minItems": 1, "maxItems": 100, "items": ref("ShopSkuIn")},
        },
    },
    "ShopProduct": {
        "type": "object",
        "properties": {
            "id": int_schema(1),
            "title": {"type": "string"},
            "description": {"type": "string"},
            "images": {"type": "array", "items": {"type": "string"}},
            "page_path": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "skus": {"type": "array", "items": ref("ShopSku")},
        },
    },
    "ShopShelf": {
        "type": "object",
        "properties": {
            "broadcast_id": BROADCAST_ID_OUT,
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "position": int_schema(0),
                        "on_shelf": {"type": "boolean"},
                        "product": ref("ShopProduct"),
                    },
                },
            },
        },
    },
    "ShopCard": {
        "type": "object",
        "properties": {
            "id": int_schema(1),
            "broadcast_id": BROADCAST_ID_OUT,
            "room": {"type": "string"},
            "product_id": int_schema(1),
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
            "broadcast_id": BROADCAST_ID,
            "sku_id": int_schema(1),
            "sale_price_fen": int_schema(0, 10**10),
            "sale_stock": int_schema(1, 100000),
            "per_user_limit": int_schema(1, 1000, default=1),
            "starts_at": TIME,
            "ends_at": TIME,
            "show_card": {
                "type": "boolean",
                "default": False,
                "description": "also push the sale's card in the broadcast's room (answered "
                "as card)",
            },
        },
    },
    "ShopCouponsIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["value_fen"],
        "properties": {
            "user_id": ID,
            "user_ids": {"type": "array", "items": ID, "minItems": 1, "maxItems": 1000},
            "value_fen": int_schema(1, 10**9),
            "broadcast_id": BROADCAST_ID,
            "note": {"type": "string", "maxLength": 120},
            "idempotency_key": ID,
        },
    },
    "ShopRefundIn": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "maxLength": 200},
            "amount_fen": {
                **int_schema(1, 10**12),
                "description": "omitted: all that is left to pay back (a whole refund)",
            },
        },
    },
    "ShopFlashSale": {
        "type": "object",
        "properties": {
            "id": int_schema(1),
            "broadcast_id": BROADCAST_ID_OUT,
            "product_id": int_schema(1),
            "sku_id": int_schema(1),
            "sale_price_fen": int_schema(0),
            "sale_stock": int_schema(0),
            "remaining": {"type": "integer", "nullable": True},
            "per_user_limit": int_schema(1),
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
            "returned_stock": int_schema(0, description="unsold units given back to the SKU"),
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
            "per_user_limit": int_schema(1, 1000),
            "sale_stock": int_schema(1, 100000),
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
            "quantity": int_schema(1, 99, default=1),
            "idempotency_key": {
                **ID,
                "description": "one per buyer tap; the same key again returns the same order",
            },
            "channel": {**ID, "default": "live"},
            "user_id": {**ID, "description": "the buyer (until viewer accounts exist)"},
            **ORDER_EXTRAS_IN,
        },
    },
    "ShopOrderIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sku_id", "quantity", "idempotency_key"],
        "properties": {
            "sku_id": int_schema(1),
            "quantity": int_schema(1, 99),
            "broadcast_id": BROADCAST_ID,
            "idempotency_key": ID,
            "channel": ID,
            "user_id": ID,
            "coupon_id": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_.:@-]{1,32}$",
                "description": "one of the buyer's unused coupons, deducted from the amount",
            },
            **ORDER_EXTRAS_IN,
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
            "product_id": int_schema(1),
            "sku_id": int_schema(1),
            "flash_sale_id": {"type": "integer", "nullable": True},
            "quantity": int_schema(1),
            "unit_price_fen": int_schema(0),
            "amount_fen": int_schema(0, description="to pay: quantity x unit price - discount"),
            "discount_fen": int_schema(0),
            "coupon_id": {"type": "string", "nullable": True},
            "broadcast_id": BROADCAST_ID_OUT,
            "anchor_id": {"type": "string"},
            "card_id": {"type": "integer", "nullable": True},
            "channel": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "pay_before": {"type": "string", "format": "date-time", "nullable": True},
            "paid_at": {"type": "string", "format": "date-time", "nullable": True},
            "transaction_id": {"type": "string", "nullable": True},
            "recipient": {
                "allOf": [{"$ref": "#/components/schemas/ShopRecipient"}],
                "nullable": True,
                "description": "masked (name 张*, phone 138****1234, address prefix****); "
                "operators read it in full at GET /api/orders/{id}/recipient",
            },
            "sharer_id": {
                "type": "string",
                "nullable": True,
                "description": "the sharer (分享员) the order is credited to",
            },
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "from_state": {"type": "string", "nullable": True},
                        "to_state": {"type": "string"},
                        "actor": {"type": "string"},
                        "reason": {"type": "string"},
                        "at_ms": int_schema(0),
                    },
                },
            },
        },
    },
    "ShopSales": {
        "type": "object",
        "description": (
            "The one definition (docs/shop.md, GMV, orders and buyers): gmv_fen = paid_fen - "
            "refunded_fen of orders that are not lottery prizes; orders: those not refunded in "
            "full; card_orders: orders placed while a card of the ordered product was shown; "
            "card_conversion: card_orders / orders."
        ),
        "properties": {
            "broadcast_id": BROADCAST_ID_OUT,
            "gmv_fen": int_schema(0),
            "orders": int_schema(0),
            "orders_placed": int_schema(0),
            "buyers": int_schema(0),
            "refunded_fen": int_schema(0),
            "card_orders": int_schema(0),
            "card_conversion": {"type": "number"},
            "products": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ShopRecipient": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "phone": {"type": "string"},
            "address": {"type": "string"},
        },
    },
    "ShopRecipientIn": RECIPIENT_IN,
    "ShopAddressIn": {
        **RECIPIENT_IN,
        "properties": {**RECIPIENT_IN["properties"], "default": {"type": "boolean"}},
    },
    "ShopAddress": {
        "type": "object",
        "description": "a saved address, in full for its owner (masked: as others see it)",
        "properties": {
            "id": int_schema(1),
            "name": {"type": "string"},
            "phone": {"type": "string"},
            "address": {"type": "string"},
            "masked": {"$ref": "#/components/schemas/ShopRecipient"},
            "default": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}
