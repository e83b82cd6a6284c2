"""Configuration of the shop bridge: the ``[shop]`` section (``BERRYLIVE_SHOP_<FIELD>``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShopConfig:
    enabled: bool = True
    """Mount the shop (products, cards, flash sales, orders, payments) on the server."""
    payment_timeout: int = 900
    """Seconds before an unpaid order is cancelled (after the provider confirms it closed)."""
    sweep_interval: float = 5.0
    """Seconds between two runs of the payment-timeout sweeper (a DB query, never key expiry)."""
    sweep_batch: int = 200
    """Most expired orders handled per sweep (the rest wait for the next one)."""
    reconcile_interval: float = 30.0
    """Seconds between two reconciliations of Redis reservations with DB orders."""
    reservation_grace: float = 20.0
    """A reservation journal entry older than this without a DB order is an orphan (crash)."""
    payment_key: str = ""
    """HMAC-SHA256 key for payment notifications. Empty: derived from the server secret."""
    provider_url: str = ""
    """Base URL of the payment provider. Empty: no payments (starting one answers 503
    ``payments_not_configured``) unless ``pay_simulator`` is on."""
    pay_simulator: bool = False
    """With no ``provider_url``: start the simulated provider on 127.0.0.1 and hand buyers its
    unauthenticated ``/sim/pay/{order}`` URL. For the demo and tests only (``make demo`` sets
    it); a shop taking real money sets ``provider_url`` instead."""
    provider_timeout: float = 5.0
    """Seconds to wait for the payment provider (query, close, refund)."""
    notify_url: str = ""
    """Payment notification URL given to the provider. Empty: this server's own endpoint."""
    notify_max_skew: int = 300
    """Seconds a notification's ``Wechatpay-Timestamp`` may differ from our clock."""
    redis_prefix: str = "berrylive:shop"
    """Prefix of every Redis key the shop writes (keys of one flash sale share a hash tag)."""
    redis_check_interval: float = 1.0
    """Seconds between two checks that Redis is the one the flash sales were rebuilt on
    (run id, epoch); a new connection of the buy path is checked at once
    (:mod:`shop_bridge.redis_epoch`)."""
    redis_connections: int = 64
    """Size of the shop's own Redis connection pool (callers wait for a free connection)."""
    max_body: int = 64 * 1024
    """Largest accepted JSON request body in bytes."""
    max_quantity: int = 99
    """Largest quantity in one order line."""
    max_unpaid_per_sku: int = 5
    """Most unpaid units of one SKU a buyer may hold in normal orders (409 unpaid_limit
    beyond it; 0: no limit). Flash sales have their own per-user limit."""
    write_batch: int = 256
    """Most orders committed in one database transaction by the group-commit writer."""
    write_queue: int = 20000
    """Most orders waiting for the writer; beyond it buyers get 503 (and stock is restored)."""
    card_cache_rooms: int = 10000
    """Rooms whose current explaining card is cached in memory for order attribution."""
    sale_retention: int = 7 * 86400
    """Seconds the Redis keys of a flash sale are kept after its end (then they expire)."""
    notification_retention: int = 90 * 86400
    """Seconds a payment notification stays in the log (pruned by the sweeper; 0: forever)."""
    notification_max_rows: int = 1_000_000
    """Most payment notifications kept; the oldest beyond it are pruned (0: no limit)."""
    prune_batch: int = 5000
    """Most log rows deleted per statement (the sweeper repeats up to 20 times per run)."""
