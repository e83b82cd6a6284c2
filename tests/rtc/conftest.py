from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.rtc import RtcEndpoint, WebRtcConfig


@pytest.fixture
async def endpoint_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start :class:`RtcEndpoint` s on 127.0.0.1, UDP port 0; closed after the test."""
    started: list[RtcEndpoint] = []

    async def factory(**fields: Any) -> RtcEndpoint:
        fields.setdefault("udp_port", 0)
        fields.setdefault("host", "127.0.0.1")
        ep = RtcEndpoint(WebRtcConfig(**fields))
        await ep.start()
        started.append(ep)
        return ep

    yield factory
    for ep in started:
        await ep.close()


@pytest.fixture
async def endpoint(endpoint_factory: Callable[..., Any]) -> RtcEndpoint:
    ep: RtcEndpoint = await endpoint_factory()
    return ep
