"""The Node ``socket.io-client`` (npm) against the hub: join, comment, merged batches.

Needs ``node`` and the packages of ``bench/danmaku/package.json`` (installed on demand into
``bench/danmaku/node_modules``, which git ignores). Skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.danmaku.helpers import join, token, wait_until

BENCH = Path(__file__).resolve().parents[2] / "bench" / "danmaku"


async def node_ready() -> str | None:
    """The node executable when socket.io-client is usable, else None (after trying npm)."""
    node = shutil.which("node")
    if node is None:
        return None
    if not (BENCH / "node_modules" / "socket.io-client").exists():
        npm = shutil.which("npm")
        if npm is None:
            return None
        proc = await asyncio.create_subprocess_exec(
            npm, "install", "--no-audit", "--no-fund", "--loglevel=error", cwd=BENCH,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(proc.wait(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
    return node if (BENCH / "node_modules" / "socket.io-client").exists() else None


async def run_node(node: str, *args: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        node, str(BENCH / "node_client_check.js"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert out, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_node_socketio_client(server) -> None:
    node = await node_ready()
    if node is None:
        pytest.skip("node or npm socket.io-client unavailable (cd bench/danmaku && npm install)")
    room = "live/node"
    py = await join(server, room, "pyviewer")
    result = await run_node(node, server.http_url, token("nodeuser"), room, "hello from node")
    assert result["error"] is None, result
    assert result["joined"]["room"] == room and result["joined"]["you"]["user"] == "nodeuser"
    mine = [c for b in result["batches"] for c in b["comments"] if c["text"] == "hello from node"]
    assert mine and mine[0]["user"] == "nodeuser"
    assert result["ack"]["ok"] is True and result["ack"]["id"] == mine[0]["id"]
    await wait_until(lambda: "hello from node" in py.texts, what="python viewer sees node")
    refused = await run_node(node, server.http_url, token("x", ttl=-1), room, "nope")
    assert refused["error"]["message"] == "token expired"
    assert refused["error"]["data"] == {"code": "token_expired"}
    await py.close()
