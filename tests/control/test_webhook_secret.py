"""A webhook's signing secret is shown once (issue 20 item 5): in the answer to its
creation and to a rotation, never by GET, the list or an edit; after a rotation the
deliveries are signed with the new secret, and the old one no longer verifies."""

from __future__ import annotations

import json
import time

from control import webhooks as wh
from tests.control.test_webhooks import start_subscriber, wait_for


async def test_secret_shown_once_and_rotated(staff) -> None:
    api, op = staff.api, staff.operator
    runner, url, received = await start_subscriber(fail_first=0)
    try:
        status, hook = await api.call(
            "POST", "/api/webhooks", op, json={"url": url, "events": ["ping"]}
        )
        assert status == 201 and len(hook["secret"]) >= 32
        first = hook["secret"]
        assert hook["secret_hint"] == "…" + first[-4:]
        status, got = await api.call("GET", f"/api/webhooks/{hook['id']}", op)
        assert status == 200 and "secret" not in got and got["secret_hint"] == hook["secret_hint"]
        status, listed = await api.call("GET", "/api/webhooks", op)
        assert all("secret" not in h for h in listed["items"])
        assert first not in json.dumps(listed) and first not in json.dumps(got)
        status, edited = await api.call(
            "PATCH", f"/api/webhooks/{hook['id']}", op, json={"description": "shop"}
        )
        assert status == 200 and "secret" not in edited
        # non-operators cannot rotate
        status, _ = await api.call(
            "POST", f"/api/webhooks/{hook['id']}/rotate-secret", staff.anchor
        )
        assert status == 403

        await api.call("POST", f"/api/webhooks/{hook['id']}/ping", op)
        await wait_for(lambda: len(received) >= 1)
        r = received[0]
        assert wh.verify(first, r["headers"]["X-Berrylive-Signature"], r["body"], time.time())

        status, rotated = await api.call("POST", f"/api/webhooks/{hook['id']}/rotate-secret", op)
        assert status == 200 and rotated["secret"] != first and len(rotated["secret"]) >= 32
        status, got = await api.call("GET", f"/api/webhooks/{hook['id']}", op)
        assert "secret" not in got and got["secret_hint"] == "…" + rotated["secret"][-4:]
        await api.call("POST", f"/api/webhooks/{hook['id']}/ping", op)
        await wait_for(lambda: len(received) >= 2)
        r = received[1]
        sig = r["headers"]["X-Berrylive-Signature"]
        assert wh.verify(rotated["secret"], sig, r["body"], time.time())
        assert not wh.verify(first, sig, r["body"], time.time())
        status, _ = await api.call("POST", "/api/webhooks/99999/rotate-secret", op)
        assert status == 404
    finally:
        await runner.cleanup()
