"""Cluster routes on an in-process server: auth, validation, the scheduler's answers."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay.cluster import CLUSTER
from tests.mediautil import operator_token, wait_for


async def test_forward_rules_api_and_operator_only_views(server: Any) -> None:
    base = server.http_url
    token = await operator_token(server)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s:
        for method, path in (
            ("GET", "/api/cluster/nodes"),
            ("GET", "/api/cluster/streams"),
            ("GET", "/api/cluster/forwards"),
            ("PUT", "/api/cluster/forwards/live/s1"),
            ("DELETE", "/api/cluster/forwards/live/s1"),
        ):
            async with s.request(method, base + path, json={"urls": []}) as r:
                assert r.status == 401, (method, path)
        url = "rtmp://cdn.example.com/push/s1?key=abc"
        async with s.put(base + "/api/cluster/forwards/live/s1", json={"urls": [url, url]},
                         headers=auth) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            assert (await r.json())["urls"] == [url]
        for bad in ({"urls": "rtmp://x/y"}, {"urls": ["http://x/y"]}, {"urls": [1]},
                    {"urls": ["rtmp://x/y"] * 9}, {}):  # fmt: skip
            async with s.put(base + "/api/cluster/forwards/live/s1", json=bad, headers=auth) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"]["code"] in ("invalid_forward", "bad_request")
        async with s.get(base + "/api/cluster/forwards", headers=auth) as r:
            body = await r.json()
            assert body["forwards"] == [{"app": "live", "stream": "s1", "urls": [url]}]
        async with s.delete(base + "/api/cluster/forwards/live/s1", headers=auth) as r:
            assert r.status == 204
        async with s.get(base + "/api/cluster/forwards", headers=auth) as r:
            assert (await r.json())["total"] == 0

        # The node registers itself; the scheduler has no edge and no stream: 404.
        directory = server.app[CLUSTER].directory

        async def registered() -> bool:
            return await directory.node(server.runtime.node_id) is not None

        await wait_for(registered, 10)
        async with s.get(base + "/api/cluster/nodes", headers=auth) as r:
            nodes = (await r.json())["nodes"]
            assert [n["node"] for n in nodes] == [server.runtime.node_id]
            assert nodes[0]["role"] == "origin" and nodes[0]["http"] == base
        async with s.get(base + "/api/play/live/nothing") as r:  # public: no token
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "stream_not_live"
        async with s.get(base + "/api/play/live/x?protocol=gopher") as r:
            assert r.status == 400
