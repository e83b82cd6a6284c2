"""``/metrics`` is not public (issue 17, low item): GMV and stream names only for the
configured token or the allowed networks (loopback by default); still Prometheus text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.control.conftest import CONTROL_TEST_SETTINGS


async def _get(url: str, local: str = "127.0.0.1", token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(url + "/metrics", headers=headers) as r,
    ):
        return r.status, await r.text()


async def test_metrics_allow_list(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(control=dict(CONTROL_TEST_SETTINGS))
    status, text = await _get(srv.http_url)  # the default: loopback
    assert status == 200 and "berrylive_orders_paid_total" in text
    srv = await server_factory(
        "narrow", control={**CONTROL_TEST_SETTINGS, "metrics_allow": ("127.0.0.1/32",)}
    )
    status, text = await _get(srv.http_url)
    assert status == 200 and "berrylive_orders_paid_total" in text
    # an address outside the list (a second loopback address stands in for the outside)
    status, text = await _get(srv.http_url, local="127.0.0.2")
    assert status == 403 and "gmv" not in text


async def test_metrics_token(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(
        control={**CONTROL_TEST_SETTINGS, "metrics_allow": (), "metrics_token": "scrape-me-42"}
    )
    status, _ = await _get(srv.http_url)
    assert status == 401
    status, _ = await _get(srv.http_url, token="wrong")
    assert status == 401
    status, text = await _get(srv.http_url, local="127.0.0.2", token="scrape-me-42")
    assert status == 200 and "# TYPE berrylive_streams gauge" in text
