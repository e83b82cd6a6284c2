"""A replay survives publisher reconnects and ffmpeg crashes; product clips follow cards."""

from __future__ import annotations

import asyncio
import time

from replay import ReplayState, finalize
from tests.mediautil import make_clip, probe_packets, start_publisher, wait_for
from tests.replay.helpers import (
    LINGER,
    decode_all,
    duration,
    get_json,
    get_text,
    probe,
    replay_dir,
    run_publisher,
    service_of,
    stream_types,
    wait_done,
    wait_replay,
)

GOP = 1.0


async def test_reconnect_continues_the_same_replay_with_a_discontinuity(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av4.flv", 4.0, gop=30)
    server = await server_factory(relay={"publisher_linger": 4.0})
    await run_publisher(server.push_url("rc"), clip)  # the phone drops...
    rep = await wait_replay(server, "live", "rc")
    await run_publisher(server.push_url("rc"), clip)  # ...and is back within the linger
    await wait_done(rep)
    svc = service_of(server)
    assert [r.id for r in svc.replays.values() if r.stream == "rc"] == [rep.id]
    assert rep.state is ReplayState.READY, rep.error
    assert [p.reason for p in rep.parts] == ["start", "publisher"]
    _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    assert view["parts"] == 2
    _, text = await get_text(view["hls"])
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}
        assert abs(duration(info) - 8.0) <= GOP, (url, duration(info))
        await asyncio.to_thread(decode_all, url)
    packets = await asyncio.to_thread(probe_packets, view["mp4"])
    video = [p for p in packets if p["codec_type"] == "video"]
    assert abs(len(video) - 240) <= 30


async def test_ffmpeg_killed_is_restarted_and_clips_match_the_cards(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av12.flv", 12.0, gop=30)
    server = await server_factory(relay={"publisher_linger": LINGER})
    bus = server.runtime.bus
    clips_seen: list[dict] = []
    bus.subscribe("replay.clip", lambda e: clips_seen.append(e.data))
    pub = await start_publisher(server.push_url("kill"), clip)
    rep = await wait_replay(server, "live", "kill")
    rec = service_of(server).recordings["live/kill"]
    await wait_for(lambda: rec.segment_count >= 1, 15)
    first = rec.current
    assert first is not None
    first.proc.kill()  # ffmpeg dies mid-stream
    await wait_for(lambda: rec.current is not None and rec.current is not first, 15)
    assert [p.reason for p in rep.parts] == ["start", "restart"]
    part2 = rep.parts[1]
    await wait_for(lambda: len(rec.playlists.get(2, type(rec.playlists[1])()).segments) >= 1, 10)
    # the shop pushes two "now explaining" cards, then clears the second one
    t1 = time.time()
    await bus.publish("card.pushed", {"card_id": 1, "broadcast_id": "b1", "room": "live/kill",
                                      "product_id": 11, "ts": t1, "pushed_ts": t1})  # fmt: skip
    await asyncio.sleep(3.0)
    t2 = time.time()
    await bus.publish("card.pushed", {"card_id": 2, "broadcast_id": "b1", "room": "live/kill",
                                      "product_id": 12, "ts": t2, "pushed_ts": t2})  # fmt: skip
    await asyncio.sleep(2.0)
    t3 = time.time()
    await bus.publish("card.cleared", {"card_id": 2, "room": "live/kill", "product_id": 12,
                                       "ts": t3, "reason": "cleared"})  # fmt: skip
    # a card for another room is not ours
    await bus.publish("card.pushed", {"card_id": 3, "room": "live/other", "product_id": 13,
                                      "ts": t3, "pushed_ts": t3})  # fmt: skip
    _, err = await asyncio.wait_for(pub.communicate(), 60)
    assert pub.returncode == 0, err
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert len(rep.parts) == 2 and rep.parts[0].duration > 0
    _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    _, text = await get_text(view["hls"])
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}
        await asyncio.to_thread(decode_all, url)
    # nothing already written was lost: every segment of part 1 is in the replay
    total = duration(await asyncio.to_thread(probe, view["mp4"]))
    assert total >= rep.parts[0].duration + rep.parts[1].duration - GOP
    assert total >= 12.0 - 4.0  # lost at most the unfinished segment + the restart gap

    clips = view["clips"]
    assert [(c["card_id"], c["product_id"]) for c in clips] == [(1, 11), (2, 12)]
    expected = [t2 - t1, t3 - t2]
    p1 = rep.parts[0].duration
    for c, (t, want) in zip(clips, [(t1, expected[0]), (t2, expected[1])], strict=True):
        at = p1 + (t - part2.wall_start)  # where the card was pushed on the replay timeline
        assert at - GOP - 0.05 <= c["start"] <= at + 0.05, (c, at)
        assert abs(c["duration"] - (want + (at - c["start"]))) <= 0.2, (c, want)
        assert abs(c["duration"] - want) <= GOP + 0.2
        info = await asyncio.to_thread(probe, c["url"])
        assert stream_types(info) == {"video", "audio"}
        assert abs(duration(info) - c["duration"]) <= 0.3, (duration(info), c)
        packets = await asyncio.to_thread(probe_packets, c["url"])
        assert next(p for p in packets if p["codec_type"] == "video")["flags"].startswith("K")
    await wait_for(lambda: len(clips_seen) == 2, 5)
    assert {c["product_id"] for c in clips_seen} == {11, 12}
    _, listed = await get_json(f"{server.http_url}/api/replays/clips?product_id=12")
    assert [c["card_id"] for c in listed["items"]] == [2]


async def test_stalled_ffmpeg_is_bounded_then_cut_and_restarted(server_factory, clip_dir, caplog):
    import os
    import signal

    clip = make_clip(clip_dir / "av12.flv", 12.0, gop=30)
    backlog = 128 * 1024
    server = await server_factory(
        relay={"publisher_linger": LINGER, "viewer_drop_after_skips": 2},
        replay={"max_backlog_bytes": backlog, "restart_backoff": 0.2},
    )
    pub = await start_publisher(server.push_url("stall"), clip)
    rep = await wait_replay(server, "live", "stall")
    rec = service_of(server).recordings["live/stall"]
    await wait_for(lambda: rec.current is not None, 15)
    first = rec.current
    assert first is not None
    os.kill(first.proc.pid, signal.SIGSTOP)  # ffmpeg stops reading its stdin
    peak = 0

    def cut() -> bool:
        nonlocal peak
        peak = max(peak, first.writer.get_write_buffer_size())
        return rec.current is not None and rec.current is not first

    await wait_for(cut, 20, step=0.01)
    # the pipe never held much more than the backlog bound (+ one GOP in flight)
    assert peak <= backlog + 600 * 1024, peak
    assert first.record.end_reason == "ffmpeg fell behind"
    assert rep.parts[1].reason == "restart"
    assert any("behind" in r.getMessage() for r in caplog.records)
    _, err = await asyncio.wait_for(pub.communicate(), 60)
    assert pub.returncode == 0, err
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert rep.parts[1].duration > 2.0


async def test_broadcast_outlives_the_hub_linger_one_replay(server_factory, clip_dir):
    """The control plane keeps a broadcast 'interrupted' longer than the relay keeps the hub:
    the publisher coming back after the hub is gone continues the same replay, which is
    finalised when the broadcast ends."""
    clip = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    server = await server_factory(relay={"publisher_linger": 0.5})
    bus = server.runtime.bus
    ready: list[dict] = []
    bus.subscribe("replay.ready", lambda e: ready.append(e.data))
    b = {"id": 5, "broadcast_id": 5, "app": "live", "stream": "long", "settings": {}}
    await bus.publish("broadcast.live", {**b, "state": "live"})
    await bus.drain()
    await run_publisher(server.push_url("long"), clip)
    rep = await wait_replay(server, "live", "long")
    rec = service_of(server).recordings["live/long"]
    await wait_for(lambda: rec.hub_gone, 10)  # the hub is gone...
    await bus.publish("broadcast.interrupted", {**b, "state": "interrupted"})
    await bus.drain()  # every handler has seen it (no fixed wait)
    assert rep.state is ReplayState.RECORDING  # ...but the broadcast is not over
    await run_publisher(server.push_url("long"), clip)  # the anchor is back
    await wait_for(lambda: rec.hub_gone, 10)
    assert rep.state is ReplayState.RECORDING and len(rep.parts) == 2
    await bus.publish("broadcast.ended", {**b, "state": "ended"})
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert [r.id for r in service_of(server).replays.values()] == [rep.id]
    assert [p.reason for p in rep.parts] == ["start", "publisher"]
    # broadcast 5 exists only in these hand-made events, not in control's records: the public
    # URLs withhold its replay as deleted, so its files are read on disk
    directory = replay_dir(server, rep)
    text = (directory / finalize.VOD_PLAYLIST).read_text()
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert rep.mp4 is not None
    info = await asyncio.to_thread(probe, str(directory / rep.mp4))
    assert abs(duration(info) - 6.0) <= GOP
    await wait_for(lambda: bool(ready), 5)
    assert ready[0]["broadcast_id"] == 5
