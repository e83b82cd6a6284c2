"""Drill 4: the disk of the recording path fills up during a live broadcast with a sale.

Promised (docs/replay.md "Free-space floor"): recording pauses before the disk the data
dir shares with the database and the append-only file runs out; flash-sale buys and
danmaku go on while it is paused; the replay keeps every segment it had; when space comes
back the recording resumes by itself in a new part, and the ended broadcast's replay is
finalised with both.

Driven: the data dir on a filesystem of its own: a ``tmpfs`` of ``--fs-mib`` MiB mounted
for the drill (needs root / CAP_SYS_ADMIN), else the host's filesystem with the floor set
just under its current free space (a quota-like floor: the disk is not really filled; the
figures say which). ``berrylive serve`` with the replay's floor
(``replay.min_free_bytes``) and a 0.5 s disk check; ffmpeg publishes to a broadcast with
a flash sale; a filler file takes the free space down to just above the floor, the
recording crosses it; then buys (distinct users) and danmaku (two Socket.IO clients in
the broadcast's room) while paused; the filler goes, the recording resumes; the broadcast
ends and the replay is finalised.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.disk_full
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import socketio

from bench.faults.harness import (
    Node,
    api,
    buy,
    clean_env,
    connect,
    create_broadcast_sale,
    login,
    run_drill,
    wait_for,
)
from danmaku import issue_token
from tests.mediautil import make_clip, start_publisher, stop

MIB = 1024**2


def mount_tmpfs(path: Path, mib: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> int:
    """Write a filler file until ``leave`` bytes are free; its size."""
    size = max(0, free_bytes(path.parent) - leave)
    with open(path, "wb") as f:
        chunk = b"\0" * MIB
        left = size
        while left > 0:
            f.write(chunk[: min(left, MIB)])
            left -= min(left, MIB)
    return size


def hls_seconds(playlist: Path) -> float:
    try:
        text = playlist.read_text()
    except OSError:
        return 0.0
    return sum(float(x) for x in re.findall(r"#EXTINF:([\d.]+)", text))


class Chat:
    """A Socket.IO danmaku client in one room, keeping every comment text it gets."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.texts: list[str] = []
        self.joined = False
        self.sio.on("*", self._any, namespace="/live")

    async def _any(self, event: str, data: Any = None) -> None:
        if event == "joined":
            self.joined = True
        if event == "comments" and isinstance(data, dict):
            self.texts += [c.get("text", "") for c in data.get("comments", [])]

    async def join(self, node: Node, room: str, uid: str) -> Chat:
        auth = {"room": room, "token": issue_token(node.secret(), uid, f"nick-{uid}", "viewer")}
        await self.sio.connect(
            node.url, namespaces=["/live"], auth=auth, transports=["websocket"], wait_timeout=10
        )
        await wait_for(lambda: self.joined, 10, "danmaku join")
        return self

    async def say(self, text: str) -> bool:
        ans = await self.sio.call("comment", text, namespace="/live", timeout=10)
        return bool(isinstance(ans, dict) and ans.get("ok"))


async def drill(root: Path, clip: Path, fs_mib: int = 256, floor_mib: int = 64) -> dict[str, Any]:
    root = root.resolve()
    data = root / "data"
    tmpfs = mount_tmpfs(data, fs_mib)
    figures: dict[str, Any] = {"drill": "disk_full"}
    try:
        if tmpfs:
            floor = floor_mib * MIB
            figures["filesystem"] = f"tmpfs {fs_mib} MiB (data dir, shared with db and AOF)"
        else:  # the host's disk: a floor 64 MiB under its free space, the filler fills that
            floor = free_bytes(data) - 64 * MIB
            figures["filesystem"] = "host filesystem, floor set 64 MiB under its free space"
        figures["floor_mib"] = round(floor / MIB, 1)
        env = clean_env(
            BERRYLIVE_REPLAY_MIN_FREE_BYTES=str(floor),
            BERRYLIVE_REPLAY_MIN_FREE_PERCENT="0",
            BERRYLIVE_REPLAY_DISK_CHECK_INTERVAL="0.5",
            BERRYLIVE_REPLAY_SEGMENT_SECONDS="1",
            BERRYLIVE_CONTROL_INTERRUPT_GRACE="2",
            BERRYLIVE_CONTROL_SWEEP_INTERVAL="0.2",
        )
        node = Node(data, env)
        await node.add_operator()
        await node.start()
        publisher = None
        chats: list[Chat] = []
        try:
            figures.update(await _run(node, data, clip, floor, chats))
        finally:
            for c in chats:
                with contextlib.suppress(Exception):
                    await c.sio.disconnect()
            if publisher is not None:
                await stop(publisher)
            await node.kill()
    finally:
        if tmpfs:
            umount(data)
    failures = []
    if figures.get("buys_ok_while_paused") != figures.get("buys_while_paused"):
        failures.append("buys failed while recording was paused")
    if figures.get("danmaku_delivered_while_paused") != figures.get("danmaku_sent_while_paused"):
        failures.append("danmaku lost while recording was paused")
    if not figures.get("segments_kept") or not figures.get("segments_kept_in_vod"):
        failures.append("segments recorded before the pause were lost")
    if not figures.get("resumed"):
        failures.append("recording did not resume when space came back")
    if figures.get("replay_state") != "ready":
        failures.append("replay not finalised")
    figures["failures"] = failures
    return figures


async def _run(node: Node, data: Path, clip: Path, floor: int, chats: list[Chat]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    token = await login(node)
    bid, sale_id = await create_broadcast_sale(node, token, 1000)
    push = (await api(node, token, "GET", f"/api/broadcasts/{bid}/push"))["url"]
    push = re.sub(r"rtmp://[^/]+/", f"rtmp://127.0.0.1:{node.rtmp_port}/", push)
    app, stream = push.split("?")[0].rsplit("/", 2)[-2:]
    publisher = await start_publisher(push, clip, loop=True)
    try:

        async def replay() -> dict[str, Any] | None:
            page = await api(node, token, "GET", f"/api/replays?broadcast_id={bid}")
            return page["items"][0] if page["items"] else None

        rec = await wait_for(replay, 30, "a replay recording")
        rdir = data / "replay" / rec["id"]
        await wait_for(lambda: hls_seconds(rdir / "p1" / "index.m3u8") >= 2, 30, "segments")
        filler = data / "filler.bin"
        # just above the floor: the recording itself crosses it
        out["filler_mib"] = round(fill(filler, floor + 256 * 1024) / MIB, 1)
        t0 = time.perf_counter()

        async def paused() -> bool:
            r = await api(node, token, "GET", f"/api/replays/{rec['id']}")
            return bool(r.get("paused") == "disk")

        await wait_for(paused, 60, "the recording to pause on the floor")
        out["paused_after_s"] = round(time.perf_counter() - t0, 2)
        out["free_mib_at_pause"] = round(free_bytes(data) / MIB, 2)
        before = {str(p.relative_to(rdir)): p.stat().st_size for p in rdir.rglob("*.ts")}
        out["seconds_before_pause"] = round(
            sum(hls_seconds(p) for p in rdir.glob("p*/index.m3u8")), 2
        )

        # while paused: buys and danmaku
        ok = 0
        n = 50
        for i in range(n):
            conn = await connect(node.http_port, i)
            try:
                ans = await buy(conn, node.secret(), sale_id, f"disk-buyer-{i}", "k")
            finally:
                conn[1].close()
            ok += ans.status == 201
        out["buys_while_paused"], out["buys_ok_while_paused"] = n, ok
        room = f"{app}/{stream}"
        chats.append(await Chat().join(node, room, "watcher"))
        # 4 speakers x 5 comments (each user's burst is 5: danmaku.rate_capacity)
        for who in ("anna", "ben", "cleo", "dan"):
            chats.append(await Chat().join(node, room, who))
        texts = [f"{c} still here {i}" for c in range(4) for i in range(5)]
        accepted = 0
        for t in texts:
            accepted += await chats[1 + int(t.split()[0])].say(t)
        want = set(texts)
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: want <= set(chats[0].texts), 10, "comments")
        out["danmaku_sent_while_paused"] = len(texts)
        out["danmaku_accepted_while_paused"] = accepted
        out["danmaku_delivered_while_paused"] = len(want & set(chats[0].texts))
        after = {str(p.relative_to(rdir)): p.stat().st_size for p in rdir.rglob("*.ts")}
        out["segments_kept"] = all(after.get(k) == v for k, v in before.items())
        out["segments_at_pause"] = len(before)

        # space back: recording resumes by itself in a new part
        filler.unlink()
        parts_before = len(list(rdir.glob("p*/")))

        async def resumed() -> bool:
            r = await api(node, token, "GET", f"/api/replays/{rec['id']}")
            return not r.get("paused") and len(list(rdir.glob("p*/"))) > parts_before

        try:
            await wait_for(resumed, 30, "the recording to resume")
            out["resumed"] = True
            await wait_for(
                lambda: hls_seconds(sorted(rdir.glob("p*/index.m3u8"))[-1]) >= 1, 30, "more"
            )
        except AssertionError:
            out["resumed"] = False
        await stop(publisher)
        await api(node, token, "POST", f"/api/broadcasts/{bid}/end", {"reason": "drill"})

        async def finished() -> dict[str, Any] | None:
            r = await api(node, token, "GET", f"/api/replays/{rec['id']}")
            return r if r["state"] not in ("recording", "finalizing") else None

        final = await wait_for(finished, 90, "the replay to be finalised")
        out["replay_state"] = final["state"]
        out["replay_parts"] = final.get("parts")
        out["replay_seconds"] = round(hls_seconds(rdir / "index.m3u8"), 2)
        out["part_seconds"] = [round(hls_seconds(p), 2) for p in sorted(rdir.glob("p*/index.m3u8"))]
        out["segments_kept_in_vod"] = all(
            name in (rdir / "index.m3u8").read_text() for name in before
        )
        await node.terminate()
    finally:
        await stop(publisher)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fs-mib", type=int, default=256)
    p.add_argument("--floor-mib", type=int, default=64)
    a = p.parse_args()
    run_drill(
        lambda tmp: drill(
            tmp / "run", make_clip(tmp / "clip.flv", 6.0, gop=30), a.fs_mib, a.floor_mib
        )
    )


if __name__ == "__main__":
    main()
