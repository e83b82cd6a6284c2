"""The payment provider of a shop with none configured.

With no ``provider_url`` and the simulator not switched on (``shop.pay_simulator``), buyers
can place orders but not pay: starting a payment answers 503 ``payments_not_configured``.
No payment can exist at a provider we never talked to, so closing or querying one reports
``NOTFOUND`` and the timeout sweeper cancels unpaid orders as usual.
"""

from __future__ import annotations

from typing import Any

from shop_bridge.errors import ProviderUnavailable
from shop_bridge.payments import NOTFOUND, ProviderPayment

__all__ = ["NoPaymentProvider", "PaymentsNotConfigured"]


class PaymentsNotConfigured(ProviderUnavailable):
    """No payment provider is configured on this server."""


class NoPaymentProvider:
    """Refuses to take payments; knows of none."""

    async def create(
        self, order_id: str, amount_fen: int, description: str, notify_url: str
    ) -> dict[str, Any]:
        raise PaymentsNotConfigured(
            "no payment provider is configured (set shop.provider_url, or shop.pay_simulator "
            "for a demo)"
        )

    async def query(self, order_id: str) -> ProviderPayment:
        return ProviderPayment(NOTFOUND)

    async def close(self, order_id: str) -> ProviderPayment:
        return ProviderPayment(NOTFOUND)

    async def refund(self, order_id: str, refund_id: str, amount_fen: int, total_fen: int) -> str:
        raise PaymentsNotConfigured("no payment provider is configured: nothing to refund through")
