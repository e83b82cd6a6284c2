"""The cluster's scheduler and views, on every node.

- ``GET /api/play/{app}/{stream}?protocol=flv|ws|rtmp|hls|whep[&redirect=1]`` (public): the URL
  of the least-loaded live edge for that stream (``302`` to it with ``redirect=1``), like a
  CDN's scheduler. Edges are compared by :meth:`NodeInfo.load` (viewers plus CPU); the
  registrations are up to one heartbeat old, so the choice is made by "power of two
  choices" among the edges (two picked at random, the less loaded wins): a burst of
  viewers spreads over the edges instead of all landing on the one that looked idlest a
  second ago. Edges whose registration expired (dead) are never chosen. Without any live
  edge the origin holding the stream is returned. Every protocol alike: LL-HLS is packaged
  by each node's hub (docs/hls.md).
- ``GET /api/cluster/nodes`` and ``GET /api/cluster/streams`` (operators): the nodes
  with their load, and every stream with its viewers summed across the cluster.

Routes, roles and API docs are declared in :mod:`relay.routes`.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from core.http import ApiError, read_json
from relay.cluster import CLUSTER, NodeInfo
from relay.forward import ForwardStore

PROTOCOLS = ("flv", "ws", "rtmp", "hls", "whep")
"""``whep``: the URL to POST an SDP offer to (relay.whep); use the JSON, not ``redirect``."""
NAME = r"[A-Za-z0-9_.\-]{1,128}"


def play_url(node: NodeInfo, protocol: str, app: str, name: str) -> str:
    if protocol == "rtmp":
        return f"{node.rtmp}/{app}/{name}"
    if protocol == "hls":
        return f"{node.http}/{app}/{name}.m3u8"
    if protocol == "whep":
        return f"{node.http}/whep/{app}/{name}"
    if protocol == "ws":
        parts = urlsplit(node.http)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/{app}/{name}.flv"
    return f"{node.http}/{app}/{name}.flv"


def choose_edge(
    edges: list[NodeInfo], cpu_weight: float, rng: random.Random | None = None
) -> NodeInfo | None:
    """Power of two choices among the live edges (see the module docstring)."""
    if not edges:
        return None
    r = rng or random
    if len(edges) == 1:
        return edges[0]
    a, b = r.sample(edges, 2)
    return a if a.load(cpu_weight) <= b.load(cpu_weight) else b


async def play_handler(request: web.Request) -> web.Response:
    app = request.match_info["app"]
    name = request.match_info["stream"]
    protocol = request.query.get("protocol", "flv")
    if protocol not in PROTOCOLS:
        raise ApiError(400, "bad_protocol", f"protocol must be one of {', '.join(PROTOCOLS)}")
    node = request.app[CLUSTER]
    try:
        nodes = await node.directory.nodes_cached()
        owner = await node.directory.stream_owner(f"{app}/{name}")
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError(
            503, "directory_unavailable", f"cluster directory unavailable: {exc}"
        ) from exc
    local = request.app[CLUSTER].registry.get(app, name)
    if owner is None and not any(f"{app}/{name}" in n.streams for n in nodes) and local is None:
        raise ApiError(404, "stream_not_live", f"stream {app}/{name} is not live in the cluster")
    edges = [n for n in nodes if n.role == "edge"]  # every protocol: edges package LL-HLS too
    chosen = choose_edge(edges, node.config.scheduler_cpu_weight)
    if chosen is None:
        chosen = next((n for n in nodes if n.node == owner), None) or next(
            (n for n in nodes if n.role == "origin"), None
        )
    if chosen is None:
        raise ApiError(503, "no_node", "no live node in the cluster")
    url = play_url(chosen, protocol, app, name)
    if request.query.get("redirect") in ("1", "true", "yes"):
        raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})
    return web.json_response(
        {
            "url": url,
            "node": chosen.node,
            "role": chosen.role,
            "protocol": protocol,
            "app": app,
            "stream": name,
        },
        headers={"Cache-Control": "no-store"},
    )


async def nodes_handler(request: web.Request) -> web.Response:
    nodes = await request.app[CLUSTER].directory.nodes()
    items = [
        {
            "node": n.node,
            "role": n.role,
            "http": n.http,
            "rtmp": n.rtmp,
            "ts": n.ts,
            "viewers": n.viewers,
            "bandwidth_out": n.bandwidth_out,
            "cpu": n.cpu,
            "streams": len(n.streams),
        }
        for n in sorted(nodes, key=lambda n: (n.role != "origin", n.node))
    ]
    return web.json_response({"nodes": items, "total": len(items)})


def aggregate(nodes: list[NodeInfo]) -> list[dict[str, Any]]:
    """Streams across the cluster: origin, edges pulling it, viewers summed per node."""
    out: dict[str, dict[str, Any]] = {}
    for n in nodes:
        for key, s in n.streams.items():
            app, _, name = key.partition("/")
            item = out.setdefault(
                key,
                {
                    "app": app,
                    "name": name,
                    "live": False,
                    "origins": [],
                    "edges": [],
                    "viewers_total": 0,
                    "viewers": {},
                    "bitrate_in": 0,
                },
            )
            viewers = int(s.get("viewers", 0) or 0)
            if n.role == "origin":
                if s.get("live"):
                    item["live"] = True
                    item["origins"].append(n.node)
                    item["bitrate_in"] = int(s.get("bitrate_in", 0) or 0)
                # An origin's viewers include the edges pulling from it; count them once.
                edges_here = sum(
                    1
                    for m in nodes
                    if m.role == "edge"
                    and str((m.streams.get(key) or {}).get("upstream", "")).rstrip("/")
                    == n.http.rstrip("/")
                )
                viewers = max(0, viewers - edges_here)
            else:
                item["edges"].append(n.node)
            item["viewers"][n.node] = viewers
            item["viewers_total"] += viewers
    return sorted(out.values(), key=lambda s: (s["app"], s["name"]))


async def cluster_streams_handler(request: web.Request) -> web.Response:
    items = aggregate(await request.app[CLUSTER].directory.nodes())
    return web.json_response({"streams": items, "total": len(items)})


def _store(request: web.Request) -> ForwardStore:
    node = request.app[CLUSTER]
    return ForwardStore(node.runtime.redis, node.config.cluster_prefix)


async def forwards_handler(request: web.Request) -> web.Response:
    rules = await _store(request).all()
    items = [
        {"app": k.partition("/")[0], "stream": k.partition("/")[2], "urls": v}
        for k, v in sorted(rules.items())
    ]
    return web.json_response({"forwards": items, "total": len(items)})


async def forward_put_handler(request: web.Request) -> web.Response:
    app, name = request.match_info["app"], request.match_info["stream"]
    body = await read_json(request, 64 * 1024)
    try:
        urls = ForwardStore.validate(body.get("urls"))
        await _store(request).put(f"{app}/{name}", urls)
    except ValueError as exc:
        raise ApiError(400, "invalid_forward", str(exc)) from exc
    return web.json_response({"app": app, "stream": name, "urls": urls})


async def forward_delete_handler(request: web.Request) -> web.Response:
    await _store(request).put(f"{request.match_info['app']}/{request.match_info['stream']}", [])
    return web.Response(status=204)
