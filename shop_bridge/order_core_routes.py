"""The order core's routes (recipients, address book, sharers, blocklist), added to the
shop's one route table (:data:`shop_bridge.routes.ROUTES`) by :func:`ops` with that
table's doc helpers. Handlers: :mod:`shop_bridge.order_core_api`."""

from __future__ import annotations

from collections.abc import Callable

from core.routes import Op, OpDoc
from shop_bridge import order_core_api, owners
from shop_bridge.openapi import ID, J, int_schema, ref

OPERATOR = ["operator"]
STAFF = ["operator", "anchor"]
PUBLIC = ["public"]


def ops(
    doc: Callable[..., OpDoc], path: Callable[..., J], query: Callable[[str, J], J]
) -> list[Op]:
    """The routes, documented with the table's ``doc``, ``path`` and ``query`` helpers."""
    BID = path("broadcast_id", {"type": "integer"})
    OID = path("order_id")
    LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 200})
    return [
        Op(
            "GET",
            "/api/shop/orders.csv",
            order_core_api.export_orders,
            doc(
                "Orders as CSV, newest first (recipients masked; recipients=full for the "
                "shipping list, logged)",
                OPERATOR,
                None,
                params=[
                    query("broadcast_id", {"type": "integer"}),
                    query("state", {"type": "string"}),
                    query("recipients", {"enum": ["masked", "full"]}),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 100000}),
                ],
                errors=(400,),
            ),
        ),
        Op(
            "POST",
            "/api/broadcasts/{broadcast_id}/share-links",
            order_core_api.create_share_link,
            doc(
                "A signed share link of the broadcast for a registered sharer: an operator "
                "(sharer_id), the broadcast's anchor (sharer_id), or a sharer for themselves "
                "(viewer token)",
                PUBLIC,
                {"type": "object"},
                {"type": "object", "properties": {"sharer_id": ID}},
                "201",
                errors=(400, 401, 403, 404, 422),
                params=[BID],
                buyer=True,
                body_required=False,
            ),
        ),
        Op(
            "POST",
            "/api/broadcasts/{broadcast_id}/share-visits",
            order_core_api.share_visit,
            doc(
                "A viewer arrived through a share link (share or X-Share-Token): one visit "
                "for the sharer per visitor, known by the viewer token's user and by the "
                "browser's X-Device-Id (no viewer token needed: a visit with only "
                "X-Device-Id is counted by the browser; neither: 401), answered with "
                "counted / not_counted (seen, capped, address_limit, refused); with a "
                "viewer token it is also the touch that credits their orders of this "
                "broadcast to the sharer within the window (credited_to)",
                PUBLIC,
                {"type": "object"},
                {"type": "object", "properties": {"share": {"type": "string"}}},
                errors=(400, 401, 404),
                params=[BID],
                buyer=True,
                body_required=False,
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts/{broadcast_id}/sharers",
            order_core_api.sharer_sales,
            doc(
                "Sales per sharer of a broadcast (orders, buyers, gmv_fen net of refunds: the "
                "shop's one definition of sales)",
                STAFF,
                {"type": "object"},
                params=[BID],
            ),
            owner=owners.BROADCAST,
        ),
        Op(
            "POST",
            "/api/sharers",
            order_core_api.register_sharer,
            doc(
                "Register (or re-activate) a sharer (分享员): 201 new, 200 known already",
                OPERATOR,
                {"type": "object"},
                {
                    "type": "object",
                    "required": ["user_id"],
                    "properties": {"user_id": ID, "name": {"type": "string", "maxLength": 64}},
                },
                "201",
                errors=(400,),
                also_ok=("200",),
            ),
        ),
        Op(
            "GET",
            "/api/sharers",
            order_core_api.list_sharers,
            doc(
                "Registered sharers",
                OPERATOR,
                {"type": "object"},
                params=[LIMIT, query("after", ID)],
            ),
        ),
        Op(
            "DELETE",
            "/api/sharers/{user_id}",
            order_core_api.deactivate_sharer,
            doc(
                "Deactivate a sharer: their links credit nobody from now on",
                OPERATOR,
                {"type": "object"},
                params=[path("user_id")],
            ),
        ),
        Op(
            "PUT",
            "/api/orders/{order_id}/recipient",
            order_core_api.put_recipient,
            doc(
                "Give or change the recipient of an order not shipped yet (the buyer, of "
                "their own order, or an operator): recipient, address_id or name/phone/address "
                "(409 recipient_locked once shipped)",
                PUBLIC,
                ref("ShopOrder"),
                {
                    "type": "object",
                    "properties": {
                        "recipient": ref("ShopRecipientIn"),
                        "address_id": int_schema(1),
                        "name": {"type": "string"},
                        "phone": {"type": "string"},
                        "address": {"type": "string"},
                    },
                },
                errors=(400, 404, 409, 413, 422),
                params=[OID],
                buyer=True,
            ),
        ),
        Op(
            "GET",
            "/api/orders/{order_id}/recipient",
            order_core_api.get_recipient,
            doc(
                "The order's recipient in full, for the operators who ship (logged)",
                OPERATOR,
                {
                    "type": "object",
                    "properties": {
                        "order_id": {"type": "string"},
                        "recipient": {"allOf": [ref("ShopRecipient")], "nullable": True},
                    },
                },
                params=[OID],
            ),
        ),
        Op(
            "GET",
            "/api/me/addresses",
            order_core_api.list_addresses,
            doc(
                "The buyer's address book (viewer token), the default first",
                PUBLIC,
                {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": ref("ShopAddress")},
                        "limit": int_schema(1),
                    },
                },
                errors=(400,),
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/me/addresses",
            order_core_api.add_address,
            doc(
                "Save an address (viewer token; 409 address_book_full beyond shop.max_addresses)",
                PUBLIC,
                ref("ShopAddress"),
                ref("ShopAddressIn"),
                "201",
                errors=(400, 409, 413),
                buyer=True,
            ),
        ),
        Op(
            "DELETE",
            "/api/me/addresses/{address_id}",
            order_core_api.delete_address,
            doc(
                "Delete a saved address of one's own (the newest left becomes the default)",
                PUBLIC,
                None,
                status="204",
                errors=(400, 404),
                params=[path("address_id", {"type": "integer"})],
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/shop/blocklist",
            order_core_api.block,
            doc(
                "Block an account (user), a device (X-Device-Id) or an IP from buying and "
                "entering lotteries, on every node (ttl_s: for a while; again: replaces)",
                OPERATOR,
                {"type": "object"},
                {
                    "type": "object",
                    "required": ["kind", "value"],
                    "properties": {
                        "kind": {"enum": ["user", "device", "ip"]},
                        "value": {"type": "string", "maxLength": 128},
                        "reason": {"type": "string", "maxLength": 200},
                        "ttl_s": int_schema(1),
                    },
                },
                "201",
                errors=(400,),
                also_ok=("200",),
            ),
        ),
        Op(
            "GET",
            "/api/shop/blocklist",
            order_core_api.list_blocked,
            doc(
                "The blocklist",
                OPERATOR,
                {"type": "object"},
                params=[
                    LIMIT,
                    query("kind", {"enum": ["user", "device", "ip"]}),
                    query("after", {"type": "integer"}),
                ],
            ),
        ),
        Op(
            "DELETE",
            "/api/shop/blocklist/{kind}/{value}",
            order_core_api.unblock,
            doc(
                "Unblock",
                OPERATOR,
                None,
                status="204",
                params=[path("kind"), path("value")],
            ),
        ),
    ]
