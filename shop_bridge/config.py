from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShopConfig:
    enabled: bool = True
    payment_timeout: int = 900
    """Seconds before an unpaid order is cancelled (after the provider confirms it closed)."""
