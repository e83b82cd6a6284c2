"""The shop assembled: one :class:`ShopService` holding its parts, started and stopped
together. It holds no business rules; each part is a small service over one
:class:`~shop_bridge.context.ShopContext`:

=================  ===========================================================  ==============
attribute          what                                                         module
=================  ===========================================================  ==============
``catalog``        products and SKUs                                            ``catalog``
``shelf``          broadcasts, goods shelf, the "now explaining" card           ``shelf``
``flash``          flash sales and the buy pipeline (reserve -> write -> answer)  ``flash``
``sale_admin``     closing, editing and settling live flash sales               ``sale_admin``
``epoch``          rebuilding the sales' Redis state when Redis may have lost   ``redis_epoch``
                   writes (start-up, restart, failover, older snapshot)
``checkout``       normal orders, payments, cancellations, refunds, coupons     ``checkout``
``notices``        the payment provider's notifications                         ``payment_notices``
``upkeep``         sweep (timeouts, settlement), reconciliation, audits         ``upkeep``
``prizes``         lottery prizes (coupons, zero-price orders)                  ``prizes``
``vouchers``       a winner's prizes; offline vouchers redeemed once            ``vouchers``
``reports``        sales figures                                                ``reports``
``aftersales``     buyers' after-sales requests, operators' decisions           ``aftersales``
=================  ===========================================================  ==============

HTTP handlers (:mod:`shop_bridge.api`) decode and validate requests and call the part
concerned; refusals are :class:`~shop_bridge.errors.ShopError` (or
:class:`~shop_bridge.state.IllegalTransition`). The database is the record of truth;
Redis holds hot flash-sale stock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.abuse import AbuseGuard, Limits
from core.bus import EventBus
from shop_bridge import payments
from shop_bridge.abuse import Blocklist
from shop_bridge.addresses import AddressBook
from shop_bridge.aftersales import AfterSales
from shop_bridge.catalog import Catalog
from shop_bridge.checkout import Checkout
from shop_bridge.config import ShopConfig
from shop_bridge.context import ShopContext
from shop_bridge.coupons import Coupons
from shop_bridge.flash import FlashSales
from shop_bridge.payment_notices import PaymentNotices
from shop_bridge.prizes import Prizes
from shop_bridge.recipients import Recipients, load_sealer
from shop_bridge.redis_epoch import RedisEpoch
from shop_bridge.refunds import Refunds
from shop_bridge.reports import Reports, SalesUpdates
from shop_bridge.sale_admin import FlashSaleAdmin
from shop_bridge.sharers import Sharers
from shop_bridge.shelf import Shelf
from shop_bridge.upkeep import Upkeep
from shop_bridge.vouchers import Vouchers

__all__ = ["ShopService"]


class ShopService:
    """The shop's parts, built over one context (see the module's docstring)."""

    def __init__(
        self,
        config: ShopConfig,
        engine: AsyncEngine,
        redis: Any,
        bus: EventBus,
        provider: payments.PaymentProvider,
        payment_key: bytes,
        notify_url: Callable[[], str],
        clock: Callable[[], float] = time.time,
        write_workers: int = 1,
        secret: str = "",
    ) -> None:
        self.ctx = ctx = ShopContext(config, engine, redis, bus, clock)
        self.catalog = Catalog(ctx)
        self.shelf = Shelf(ctx, self.catalog)
        self.flash = FlashSales(ctx, self.catalog, self.shelf, write_workers)
        self.sale_admin = FlashSaleAdmin(ctx, self.flash)
        self.epoch = RedisEpoch(ctx, self.flash)
        self.checkout = Checkout(ctx, self.catalog, self.shelf, provider, notify_url)
        self.notices = PaymentNotices(ctx, self.checkout, payment_key)
        self.upkeep = Upkeep(ctx, self.flash, self.sale_admin, self.checkout, self.notices)
        self.prizes = Prizes(ctx, self.shelf)
        self.vouchers = Vouchers(ctx)
        self.reports = Reports(ctx)
        self.sales_updates = SalesUpdates(ctx, self.reports)
        self.refunds = Refunds(ctx, self.checkout)
        self.aftersales = AfterSales(ctx, self.refunds)
        self.coupons = Coupons(ctx)
        # the order core: sealed recipients, address books (the key: docs/shop.md)
        sealer = load_sealer(config.recipient_key_file, secret or payment_key.hex())
        self.recipients = Recipients(ctx, sealer)
        self.addresses = AddressBook(ctx, sealer)
        self.prizes.addresses = self.addresses
        self.sharers = Sharers(ctx, secret or payment_key.hex())
        self.abuse = AbuseGuard(
            redis,
            config.redis_prefix,
            {
                "buy": Limits(config.buy_limit_user, config.buy_limit_device, config.buy_limit_ip),
                "lottery": Limits(
                    config.lottery_limit_user, config.lottery_limit_device, config.lottery_limit_ip
                ),
                "aftersales": Limits(
                    config.aftersales_limit_user,
                    config.aftersales_limit_device,
                    config.aftersales_limit_ip,
                ),
            },
            config.rate_window,
            min_account_age=config.flash_min_account_age,
            clock=lambda: ctx.clock(),
        )
        self.blocklist = Blocklist(engine, self.abuse, lambda: ctx.clock())
        self._unsubscribe: list[Callable[[], None]] = []
        self.prize_outbox = self.prizes.consumer(
            f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        )
        """Lottery prizes from the durable outbox (``core.outbox``), granted exactly once."""

    async def start(self, background: bool = True) -> None:
        """Start the writer and the outbox, follow other packages' events, reconcile once
        and (with ``background``) start the periodic sweep and reconciliation."""
        self.flash.start()
        self.ctx.start()
        self._unsubscribe += (
            self.prizes.subscribe() + self.shelf.subscribe() + self.sale_admin.subscribe()
        )
        self.prize_outbox.start()
        self.sales_updates.start()
        self.refunds.start(background)
        self.aftersales.start()
        await self.epoch.start(background)  # the sales rebuilt from the database first
        await self.upkeep.start(background)

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ctx.flush_events(), 5)
        for unsub in self._unsubscribe:
            unsub()
        self._unsubscribe.clear()
        await self.prize_outbox.stop()
        await self.sales_updates.stop()
        self.aftersales.stop()
        await self.refunds.stop()
        await self.upkeep.stop()
        await self.ctx.stop()
        await self.flash.stop()
        await self.epoch.stop()
