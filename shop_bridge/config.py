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
    require_recipient: bool = True
    """Paying an order needs its recipient (409 ``recipient_required`` otherwise): nobody
    could ship it. Off only for shops that ship nothing."""
    recipient_key_file: str = ""
    """File of AES-256 keys sealing recipients and address books, one ``<key id> <base64>``
    per line, the last one sealing new data (see docs/shop.md, rotation). Empty: a key
    derived from the server secret (HKDF-SHA256)."""
    max_addresses: int = 20
    """Most saved addresses in one buyer's address book (409 ``address_book_full``)."""
    sharer_attribution: str = "last"
    """Which sharer an order is credited to when a buyer came through several share
    links: ``first`` (the first link within the window) or ``last`` (the latest)."""
    sharer_window: int = 86400
    """Seconds after a buyer arrives through a share link during which their orders of
    that broadcast are credited to the sharer."""
    share_link_ttl: int = 7 * 86400
    """Seconds a share link stays valid after it is made."""
    share_link_base: str = ""
    """URL of the viewer page that share links point to (``<base>?broadcast=<id>&share=<token>``).
    Empty: this server's ``/live/`` viewer page."""
    rate_window: int = 10
    """Seconds of one rate-limit window (buys, orders, lottery entries)."""
    buy_limit_user: int = 20
    """Most buys and order placements of one account per window (0: no limit)."""
    buy_limit_device: int = 30
    """Most buys and order placements from one device (``X-Device-Id``) per window (0: no limit)."""
    buy_limit_ip: int = 0
    """Most buys and order placements from one IP address per window (0: no limit, the
    default: a carrier's NAT puts thousands of buyers behind one address)."""
    lottery_limit_user: int = 5
    """Most lottery entries of one account per window (0: no limit)."""
    lottery_limit_device: int = 10
    """Most lottery entries from one device per window (0: no limit)."""
    lottery_limit_ip: int = 0
    """Most lottery entries from one IP address per window (0: no limit, the default)."""
    flash_min_account_age: int = 0
    """Flash sales refuse accounts younger than this many seconds (403 ``account_too_new``;
    0: no rule). The age comes from the viewer token's ``created`` claim, else from when
    the shop first saw the account."""
    aftersales_window_days: int = 15
    """Days after payment during which a buyer may ask for after-sales (a refund) of an
    order (409 ``too_late`` after it; 0: no limit)."""
    aftersales_limit_user: int = 5
    """Most after-sales requests (asking, withdrawing) of one account per ``rate_window``
    (0: no limit)."""
    aftersales_limit_device: int = 10
    """Most after-sales requests from one device (``X-Device-Id``) per window (0: no limit)."""
    aftersales_limit_ip: int = 0
    """Most after-sales requests from one IP address per window (0: no limit, the default)."""
