"""SRS-style HTTP callbacks: ``on_publish``, ``on_unpublish``, ``on_play``, ``on_stop``.

A JSON POST; the action is allowed when the hook answers HTTP 200 with body ``0`` (or a
JSON ``{"code": 0}``). ``on_publish``/``on_play`` decide; ``on_unpublish``/``on_stop`` are
notifications whose failures are only logged. An unreachable deciding hook refuses.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)


class Hooks:
    def __init__(
        self,
        on_publish: str = "",
        on_unpublish: str = "",
        on_play: str = "",
        on_stop: str = "",
        timeout: float = 3.0,
    ) -> None:
        self.urls = {
            "on_publish": on_publish,
            "on_unpublish": on_unpublish,
            "on_play": on_play,
            "on_stop": on_stop,
        }
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def enabled(self, action: str) -> bool:
        return bool(self.urls.get(action))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, action: str, payload: dict[str, Any]) -> tuple[bool, str]:
        """(allowed, reason). Without a configured URL every action is allowed."""
        url = self.urls.get(action)
        if not url:
            return True, ""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = {"action": action, **payload}
        try:
            async with self._session.post(url, json=body) as resp:
                text = (await resp.text()).strip()
                if resp.status != 200:
                    return False, f"{action} hook answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("%s hook %s failed: %s", action, url, exc)
            return False, f"{action} hook unreachable"
        if text == "0":
            return True, ""
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("code") == 0:
            return True, ""
        if parsed == 0:
            return True, ""
        return False, f"{action} hook refused ({text[:100]!r})"
