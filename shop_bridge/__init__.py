"""shop_bridge: products in the stream, flash sales with exact stock, orders and payments.

``setup(app, config)`` installs the route table (:data:`shop_bridge.routes.ROUTES`) and a
lifecycle that opens the database (running this package's Alembic migrations), starts the
payment provider client (or the simulated provider), the group-commit order writer, the
payment-timeout sweeper and the Redis/DB reconciler. See ``docs/shop.md``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from core.abuse import ABUSE_GUARD
from core.db import create_engine, migrate
from core.runtime import RUNTIME
from shop_bridge.api import MAX_BODY, NOTIFY_PATH, SHOP
from shop_bridge.config import ShopConfig
from shop_bridge.no_provider import NoPaymentProvider
from shop_bridge.payments import HttpPaymentProvider, PaymentProvider, derive_key
from shop_bridge.routes import ROUTES
from shop_bridge.service import ShopService
from shop_bridge.simulator import SimulatedProvider
from shop_bridge.state import OrderState

__all__ = ["PAY_SIMULATOR", "SHOP", "OrderState", "ShopConfig", "ShopService", "setup"]

logger = logging.getLogger(__name__)

PAY_SIMULATOR: web.AppKey[SimulatedProvider] = web.AppKey(
    "berrylive.shop.pay_simulator", SimulatedProvider
)
"""Set when ``pay_simulator`` is on and no ``provider_url`` is configured: the simulated
provider this node started."""

MIGRATIONS = Path(__file__).parent / "migrations"


def setup(app: web.Application, config: ShopConfig) -> None:
    """Register this package's routes and lifecycle on ``app``."""
    app[MAX_BODY] = config.max_body
    ROUTES.install(app)

    async def shop_ctx(app: web.Application) -> AsyncIterator[None]:
        runtime = app[RUNTIME]
        engine = create_engine(runtime.database_url)
        simulator: SimulatedProvider | None = None
        provider: HttpPaymentProvider | None = None
        service: ShopService | None = None
        pool = aioredis.BlockingConnectionPool.from_url(
            runtime.redis_url, max_connections=config.redis_connections, timeout=10
        )
        redis = aioredis.Redis(connection_pool=pool)
        try:
            await migrate(engine, MIGRATIONS, "shop")
            key = derive_key(config.payment_key, runtime.secret)
            url = config.provider_url
            if not url and config.pay_simulator:
                simulator = SimulatedProvider(key)
                public = runtime.public_host
                local_only = public in ("127.0.0.1", "localhost", "::1", "")
                url = await simulator.start("127.0.0.1" if local_only else "0.0.0.0", 0, public)
                app[PAY_SIMULATOR] = simulator
                logger.warning(
                    "payments go to the built-in simulator (%s): for demos and tests only", url
                )
            payer: PaymentProvider
            if url:
                provider = HttpPaymentProvider(url, key, config.provider_timeout)
                await provider.start()
                payer = provider
            else:
                logger.warning(
                    "no payment provider configured (shop.provider_url): orders can be "
                    "placed but not paid"
                )
                payer = NoPaymentProvider()

            def notify_url() -> str:
                return config.notify_url or runtime.http_base() + NOTIFY_PATH

            workers = 1 if engine.dialect.name == "sqlite" else 4
            service = ShopService(
                config,
                engine,
                redis,
                runtime.bus,
                payer,
                key,
                notify_url,
                write_workers=workers,
                secret=runtime.secret,
            )
            await service.start()
            app[SHOP] = service
            app[ABUSE_GUARD] = service.abuse  # the lottery entry checks it too
            yield
        finally:
            if service is not None:
                await service.stop()
            if provider is not None:
                await provider.close_session()
            if simulator is not None:
                await simulator.stop()
            await redis.aclose()
            await pool.disconnect()
            await engine.dispose()

    app.cleanup_ctx.append(shop_ctx)
