"""Lottery prizes: a winner drawn by the danmaku hub gets a coupon or a zero-price order.

The hub puts every ``lottery.prize`` in the outbox (:mod:`core.outbox`); this node reads
it in the ``shop`` consumer group (:meth:`Prizes.consumer`) and acknowledges an entry once
its grant is committed, so a prize is granted even if the shop was down, slow or crashed
when it was drawn. The same event also arrives over the bus at once (:meth:`on_prize`);
the operators' ``POST /api/lottery/prizes`` replays one by hand. All three grant exactly
once per grant key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from core.outbox import Consumer, Outbox, Rejected
from danmaku.events import LotteryPrize
from shop_bridge.addresses import AddressBook
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.context import ShopContext, new_id
from shop_bridge.errors import ShopError
from shop_bridge.events import OrderCreated, OrderPaid, PrizeGranted
from shop_bridge.models import COUPONS, GRANTS, ORDERS, SKUS, TRANSITIONS
from shop_bridge.recipients import sealed_columns
from shop_bridge.shelf import Shelf
from shop_bridge.state import OrderState
from shop_bridge.vouchers import new_code

logger = logging.getLogger(__name__)


class Prizes:
    """Coupons and prize orders for lottery winners."""

    def __init__(self, ctx: ShopContext, shelf: Shelf) -> None:
        self.ctx = ctx
        self.shelf = shelf
        self.addresses: AddressBook | None = None
        """Set by the service: a product prize ships to the winner's default address."""

    def subscribe(self) -> list[Callable[[], None]]:
        """Grant the danmaku hub's prizes; the unsubscribers."""
        return [self.ctx.bus.on(LotteryPrize, self.on_prize)]

    def consumer(self, name: str, claim_idle_s: float = 30.0) -> Consumer[LotteryPrize]:
        """This node's reader of the prize outbox (``start()``/``stop()`` by the service)."""
        return Consumer(
            Outbox(self.ctx.redis),
            LotteryPrize,
            "shop",
            name,
            self.on_durable_prize,
            claim_idle_s=claim_idle_s,
        )

    async def on_durable_prize(self, event: LotteryPrize) -> None:
        """Grant one outbox entry; a refusal (4xx) is final, anything else is retried."""
        try:
            result = await self.grant(event.to_data())
        except ShopError as exc:
            if exc.status >= 500:
                raise
            raise Rejected(f"{exc.code}: {exc.message}") from None
        logger.info("lottery prize granted from the outbox: %s", result)

    async def on_prize(self, event: LotteryPrize) -> None:
        data = event.to_data()
        try:
            result = await self.grant(data)
            logger.info("lottery prize handled: %s", result)
        except ShopError as exc:
            logger.error("lottery prize event refused (%s): %s", exc.message, data)

    async def grant(self, data: dict[str, Any]) -> dict[str, Any]:
        """Give a lottery winner a coupon or a zero-price order, exactly once per grant key.

        Accepts the danmaku hub's ``lottery.prize`` payload: ``{lottery_id, room, user_id,
        nick, prize: {name, sku?, coupon?, ...}, prize_index, n}``. ``prize.sku`` (a SKU id
        or code) gives a zero-price order of that SKU; ``prize.coupon`` (a value in fen, or
        a coupon code) or ``prize.value_fen`` gives a coupon; anything else is recorded as
        ``manual`` for the operators. The grant key (``grant_id``, else
        ``<lottery_id>:<n>``) is a primary key, so a repeated event grants nothing twice.
        """
        lottery_id = data.get("lottery_id")
        user_id = data.get("user_id") or data.get("user")
        raw_prize = data.get("prize")
        prize: dict[str, Any] = raw_prize if isinstance(raw_prize, dict) else {}
        if not isinstance(lottery_id, str | int) or not isinstance(user_id, str) or not user_id:
            raise ShopError(400, "invalid_prize", "lottery_id and user_id are required")
        lottery_id, user_id = str(lottery_id)[:64], user_id[:64]
        broadcast_id = str(data.get("broadcast_id") or "")[:64]
        room = data.get("room")
        if not broadcast_id and isinstance(room, str):
            broadcast_id = await self.shelf.broadcast_of_room(room)
        n = data.get("n")
        if data.get("grant_id"):
            grant_key = str(data["grant_id"])
        elif isinstance(n, int) and not isinstance(n, bool):
            grant_key = f"{lottery_id}:{n}"
        else:
            grant_key = f"{lottery_id}:{user_id}:{data.get('prize_index', 0)}"
        grant_key = grant_key[:200]
        kind = prize.get("kind")
        if kind not in ("coupon", "product", "voucher"):
            if prize.get("sku") or prize.get("sku_id"):
                kind = "product"
            elif prize.get("coupon") or prize.get("value_fen"):
                kind = "coupon"
            else:
                kind = "manual"
        now = self.ctx.now_ms()
        grant: dict[str, Any] = {
            "grant_key": grant_key,
            "lottery_id": lottery_id,
            "user_id": user_id,
            "kind": str(kind)[:16],
            "coupon_id": None,
            "order_id": None,
            "status": "granted",
            "created_ms": now,
            "code": new_code() if kind == "voucher" else None,
            "name": prize_name(prize),
        }
        order_row: dict[str, Any] | None = None
        ship_to = None  # a product prize ships to the winner's default address, if any
        if kind == "product" and self.addresses is not None:
            ship_to = await self.addresses.default_recipient(user_id)
        try:
            async with self.ctx.engine.begin() as conn:
                if kind == "coupon":
                    value, code = coupon_of(prize)
                    grant["coupon_id"] = new_id()
                    await conn.execute(insert(GRANTS).values(**grant))
                    await conn.execute(
                        insert(COUPONS).values(
                            id=grant["coupon_id"],
                            user_id=user_id,
                            value_fen=value,
                            broadcast_id=broadcast_id,
                            source=f"lottery:{grant_key}:{code}"[:200],
                            created_ms=now,
                        )
                    )
                elif kind == "product":
                    ref = prize.get("sku_id", prize.get("sku"))
                    q = select(SKUS)
                    if isinstance(ref, int) and not isinstance(ref, bool):
                        q = q.where(SKUS.c.id == ref)
                    elif isinstance(ref, str) and ref.isdigit() and len(ref) < 12:
                        q = q.where(SKUS.c.id == int(ref))
                    elif isinstance(ref, str) and ref:
                        q = q.where(SKUS.c.code == ref[:64])
                    else:
                        raise ShopError(400, "invalid_prize", "product prize needs a sku")
                    sku = (await conn.execute(q.limit(1))).mappings().first()
                    if sku is None:
                        raise ShopError(422, "unknown_sku", f"no sku {str(ref)[:40]!r}")
                    sku_id = sku["id"]
                    res = await conn.execute(
                        update(SKUS)
                        .where(SKUS.c.id == sku_id, SKUS.c.stock >= 1)
                        .values(stock=SKUS.c.stock - 1)
                    )
                    if res.rowcount != 1:
                        grant["status"] = "failed_no_stock"
                        await conn.execute(insert(GRANTS).values(**grant))
                    else:
                        anchor_id = ""
                        if broadcast_id:
                            anchor_id = (await self.shelf.broadcast_info(broadcast_id))[0]
                        order_row = {
                            "id": new_id(),
                            "kind": "prize",
                            "state": OrderState.PAID.value,
                            "user_id": user_id,
                            "idempotency_key": f"prize:{grant_key}"[:64],
                            "product_id": sku["product_id"],
                            "sku_id": sku_id,
                            "flash_sale_id": None,
                            "quantity": 1,
                            "unit_price_fen": 0,
                            "amount_fen": 0,
                            "broadcast_id": broadcast_id,
                            "anchor_id": anchor_id,
                            "card_id": None,
                            "card_product_id": None,
                            "channel": "lottery",
                            "created_ms": now,
                            "updated_ms": now,
                            "expires_ms": None,
                            "paid_ms": now,
                            "transaction_id": "",
                            "stock_released": False,
                        }
                        if ship_to is not None and self.addresses is not None:
                            order_row.update(
                                sealed_columns(self.addresses.sealer, order_row["id"], ship_to)
                            )
                        grant["order_id"] = order_row["id"]
                        await conn.execute(insert(GRANTS).values(**grant))
                        await conn.execute(insert(ORDERS).values(**order_row))
                        await conn.execute(
                            insert(TRANSITIONS).values(
                                order_id=order_row["id"],
                                from_state=None,
                                to_state=OrderState.PAID.value,
                                actor=f"lottery:{lottery_id}"[:64],
                                reason="lottery prize (zero price)",
                                at_ms=now,
                            )
                        )
                elif kind == "voucher":  # the winner shows the code; an operator redeems it
                    await conn.execute(insert(GRANTS).values(**grant))
                else:
                    grant["status"] = "manual"
                    await conn.execute(insert(GRANTS).values(**grant))
        except IntegrityError:
            async with self.ctx.engine.connect() as conn:
                row = (
                    (await conn.execute(select(GRANTS).where(GRANTS.c.grant_key == grant_key)))
                    .mappings()
                    .first()
                )
            if row is None:
                raise
            return {**dict(row), "duplicate": True}
        if grant["status"] != "granted":
            logger.warning("lottery prize %s could not be granted: %s", grant_key, grant["status"])
        if order_row is not None:
            await self.ctx.bus.emit(
                OrderCreated.of(order_row, "lottery"), OrderPaid.of(order_row, "lottery")
            )
        # the code is the winner's; the event keeps its fields of before (no name)
        public = {k: v for k, v in grant.items() if k not in ("code", "name")}
        await self.ctx.bus.emit(PrizeGranted(**public, broadcast_id=to_wire(broadcast_id)))
        return {**grant, "duplicate": False}


def prize_name(prize: dict[str, Any]) -> str | None:
    """The prize's name as the lottery gave it (None: it has none)."""
    name = prize.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    return " ".join(name.split())[:128]


def coupon_of(prize: dict[str, Any]) -> tuple[int, str]:
    """(value in fen, coupon code) of a coupon prize."""
    value = prize.get("value_fen")
    code = prize.get("coupon")
    code_s = str(code)[:64] if isinstance(code, str | int) and not isinstance(code, bool) else ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10**9:
        return value, code_s
    if code_s.isdigit() and 0 < int(code_s) <= 10**9:
        return int(code_s), code_s
    if code_s:
        return 0, code_s  # a coupon template named by code; its value lives with the template
    raise ShopError(400, "invalid_prize", "coupon prize needs value_fen or a coupon code")
