"""Separate sender process: M comments/s into one room over K raw Socket.IO connections.

Each comment's text is ``b:<send time>:<seq>`` so receivers measure send-to-receive
latency. Prints one JSON line ``{"sent": n, "started": t0, "stopped": t1}`` at the end.

    python -m bench.danmaku.sender --port P --room live/bench --rate 500 --duration 14
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.danmaku.eio import connect
from core.tokens import issue_token


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--room", default="live/bench")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--secret", default="bench-secret")
    a = p.parse_args()
    clients = []
    for i in range(a.senders):
        tok = issue_token(a.secret, f"sender{i}", f"sender{i}", "viewer", ttl=3600)
        clients.append(await connect("127.0.0.1", a.port, {"room": a.room, "token": tok}))
    loop = asyncio.get_running_loop()
    sent = 0
    t0 = loop.time()
    started = time.time()
    step = 0.005
    while True:
        now = loop.time()
        if now - t0 >= a.duration:
            break
        due = int((now - t0) * a.rate) - sent
        for _ in range(max(0, due)):
            c = clients[sent % len(clients)]
            c.emit("comment", {"text": f"b:{time.time():.6f}:{sent}"})
            sent += 1
        await asyncio.sleep(step)
    stopped = time.time()
    await asyncio.sleep(0.5)
    for c in clients:
        c.close()
    print(json.dumps({"sent": sent, "started": started, "stopped": stopped}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
