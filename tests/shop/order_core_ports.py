"""The order core's tests start their servers with the WebRTC UDP port on 0 when the
configuration has one (a fixed default port collides with other test runs on the
machine). Import ``server_factory`` from here into a test module to use it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from control.config import Config


@pytest.fixture
def server_factory(server_factory: Callable[..., Any]) -> Callable[..., Any]:
    names = {f.name for f in dataclasses.fields(Config)}

    async def factory(name: str = "node", **sections: dict[str, Any]) -> Any:
        if "webrtc" in names:
            sections = {**sections, "webrtc": {"udp_port": 0, **sections.get("webrtc", {})}}
        return await server_factory(name, **sections)

    return factory
