"""Fixtures of the danmaku tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.redis import EmbeddedValkey


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[EmbeddedValkey]:
    """An embedded valkey-server (no persistence) that several nodes of a test share
    (``redis={"url": valkey.url}``)."""
    vk = EmbeddedValkey(tmp_path / "shared-redis", persist=False)
    await vk.start()
    yield vk
    await vk.stop()
