"""Per-connection order under load: ``joined`` is always the first event a client gets,
and after it every batch of its room arrives, in order, none lost.

Many rooms, clients joining while bursts of comments flow at the shortest tick (10 ms),
over every carrier: the owned websocket path (raw protocol clients and python-socketio
websocket clients) and python-socketio's own sessions (polling, polling then upgrade).
Only what the clients received is asserted, never how long it took.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.danmaku import eio
from danmaku.service import DANMAKU
from tests.danmaku.helpers import NS, Viewer, token, wait_until

ROOMS = [f"live/order{i}" for i in range(4)]
SENDERS_PER_ROOM = 2
RAW_VIEWERS_PER_ROOM = 40
LIB_VIEWERS_PER_ROOM = 2
COMMENTS_PER_SENDER = 240
BURST = 40


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __call__(self, client: eio.EioClient, body: bytes) -> None:
        args = json.loads(body)
        self.events.append((args[0], args[1] if len(args) > 1 else None))


def check_order(events: list[tuple[str, Any]], room: str, senders: list[str]) -> set[str]:
    """``joined`` first; then batches of ``room`` with consecutive ``seq``; each sender's
    comments in the order sent, with no gap. Returns the texts seen."""
    assert events, "nothing received"
    assert events[0][0] == "joined", events[:3]
    assert all(e != "joined" for e, _ in events[1:]), "joined twice"
    batches = [d for e, d in events if e == "comments"]
    assert all(b["room"] == room for b in batches)
    seqs = [b["seq"] for b in batches]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    texts = [c["text"] for b in batches for c in b["comments"]]
    for s in senders:
        mine = [int(t.rsplit("/", 1)[1]) for t in texts if t.startswith(s + "/")]
        assert mine == list(range(mine[0], mine[0] + len(mine))), (s, mine[:20])
    return set(texts)


async def test_joined_first_and_batches_in_order_under_load(server_factory) -> None:
    server = await server_factory(
        danmaku={
            "tick_ms": 10,
            "rate_capacity": 100000.0,
            "rate_per_s": 100000.0,
            "batch_max_comments": 100000,
            "history_on_join": 5,
        }
    )
    hub = server.app[DANMAKU].hub
    port = server.runtime.http_port
    senders: dict[str, list[eio.EioClient]] = {}
    names: dict[str, list[str]] = {}
    for room in ROOMS:
        names[room] = [f"{room}/s{j}" for j in range(SENDERS_PER_ROOM)]
        senders[room] = [
            await eio.connect("127.0.0.1", port, {"room": room, "token": token(f"{n}")})
            for n in names[room]
        ]
    sent = 0

    async def chatter(stop_at: int) -> None:
        """Bursts of comments from every sender, a loop turn between bursts."""
        nonlocal sent
        while sent < stop_at:
            for room in ROOMS:
                for name, client in zip(names[room], senders[room], strict=True):
                    for i in range(sent, sent + BURST):
                        client.emit("comment", f"{name}/{i}")
            sent += BURST
            await asyncio.sleep(0)

    half = COMMENTS_PER_SENDER // 2
    talk = asyncio.create_task(chatter(half))
    raw: list[tuple[str, Recorder, eio.EioClient]] = []
    lib: list[tuple[str, Viewer]] = []

    async def raw_viewer(room: str, i: int) -> None:
        rec = Recorder()
        c = await eio.connect("127.0.0.1", port, {"room": room, "token": token(f"v{i}")}, rec)
        raw.append((room, rec, c))

    async def lib_viewer(room: str, i: int, transports: list[str] | None) -> None:
        v = Viewer()
        await v.sio.connect(
            server.http_url, namespaces=[NS], auth={"room": room, "token": token(f"l{i}")},
            transports=transports, wait_timeout=10,
        )  # fmt: skip
        lib.append((room, v))

    # everyone joins while the bursts flow (the window where ``joined`` could be overtaken)
    joins = [
        raw_viewer(r, k * 1000 + i)
        for k, r in enumerate(ROOMS)
        for i in range(RAW_VIEWERS_PER_ROOM)
    ]
    joins += [
        lib_viewer(r, k * 100 + i, ["websocket"])
        for k, r in enumerate(ROOMS)
        for i in range(LIB_VIEWERS_PER_ROOM)
    ]
    joins += [lib_viewer(ROOMS[0], 900, ["polling"]), lib_viewer(ROOMS[1], 901, None)]
    await asyncio.gather(*joins)
    await talk
    await asyncio.create_task(chatter(COMMENTS_PER_SENDER))
    assert any(v.sio.transport() == "polling" for _, v in lib)
    total = len(ROOMS) * (RAW_VIEWERS_PER_ROOM + LIB_VIEWERS_PER_ROOM) + 2
    assert len(raw) + len(lib) == total
    last = {room: {f"{n}/{COMMENTS_PER_SENDER - 1}" for n in names[room]} for room in ROOMS}

    def texts(events: list[tuple[str, Any]]) -> set[str]:
        return {c["text"] for e, d in events if e == "comments" for c in d["comments"]}

    received = [(room, rec.events) for room, rec, _ in raw] + [(r, v.events) for r, v in lib]
    for room, got in received:
        await wait_until(
            lambda w=last[room], g=got: w <= texts(g), timeout=60, what="a viewer got all"
        )
    for room, got in received:
        check_order(got, room, names[room])
    assert hub.stats.slow_clients_dropped == 0
    assert hub.stats.direct_frames > 0 and hub.stats.queued_frames > 0
    for _, _, c in raw:
        c.close()
    for room in ROOMS:
        for c in senders[room]:
            c.close()
    for _, v in lib:
        if v.sio.transport() == "polling":
            await v.sio.eio.disconnect(abort=True)
        else:
            await v.close()
