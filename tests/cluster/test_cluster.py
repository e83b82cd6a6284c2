"""Origin + edges as real processes on 127.0.0.1 sharing one Redis; ffmpeg publishes,
PyAV and raw HTTP-FLV readers play from the edges."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.forward import ForwardStore
from tests.cluster.harness import TTL, Cluster, FlvViewer, Node, RtmpPublisher, cluster
from tests.mediautil import make_clip, probe_packets, start_publisher, stop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1-second GOPs so a republished stream reaches viewers quickly.
    return make_clip(tmp_path_factory.mktemp("clips") / "cluster.flv", 6.0, gop=30)


async def probe_live(url: str, seconds: float = 2.0) -> dict[str, int]:
    """Packets per type PyAV reads from a live URL in ``seconds`` of stream time."""
    packets = await asyncio.to_thread(probe_packets, url, 60, seconds)
    counts: dict[str, int] = {}
    for p in packets:
        counts[p["codec_type"]] = counts.get(p["codec_type"], 0) + 1
    return counts


async def stream_owner_is(c: Cluster, node: str | None, key: str = "live/s") -> bool:
    return await c.directory.stream_owner(key) == node


async def test_edges_pull_on_demand_one_upstream_each_and_stop_when_idle(
    tmp_path: Path, clip: Path
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin = await c.start("origin-a", "origin")
        edge1 = await c.start("edge-1", "edge", origins=[origin])  # configured origin
        edge2 = await c.start("edge-2", "edge")  # Redis directory only
        # Nothing published: an edge answers 404 and does not keep a pull.
        async with session.get(edge1.flv_url("s")) as r:
            assert r.status == 404
        anchor = await start_publisher(origin.push_url("s"), clip, loop=True)
        try:
            await wait_for(lambda: stream_owner_is(c, "origin-a"), 15)
            # Concurrent first viewers on each edge: one pull per edge.
            viewers = [FlvViewer(session, e.flv_url("s")) for e in (edge1, edge2) for _ in range(4)]
            probes = await asyncio.gather(
                probe_live(edge1.flv_url("s")), probe_live(edge2.flv_url("s"))
            )
            for counts in probes:
                assert counts.get("video", 0) >= 30 and counts.get("audio", 0) >= 30, counts
            await wait_for(lambda: all(len(v.video()) > 30 for v in viewers), 20)
            assert all(v.status == 200 for v in viewers)

            async def upstreams_are(n: int) -> bool:
                return await c.stream_viewers(origin) == n

            # 8 edge viewers (+ 2 PyAV readers): the origin serves exactly one upstream per edge.
            await wait_for(lambda: upstreams_are(2), 10)

            async def edge_viewers_are(n: int) -> bool:
                return [await c.stream_viewers(e) for e in (edge1, edge2)] == [n, n]

            await wait_for(lambda: edge_viewers_are(4), 10)  # the PyAV readers have left
            assert await c.stream_viewers(origin) == 2
            for e in (edge1, edge2):  # concurrent first viewers shared one pull
                assert e.logs().count("edge: pulling live/s") == 1, e.logs()
            # RTMP play through an edge (same hub, same pull).
            counts = await probe_live(f"{edge2.rtmp}/live/s")
            assert counts.get("video", 0) >= 30 and counts.get("audio", 0) >= 30, counts
            assert await c.stream_viewers(origin) == 2
            for e in (edge1, edge2):
                info = await c.info(e)
                assert info is not None
                assert info.streams["live/s"]["publisher"] == "edge"
                assert info.streams["live/s"]["upstream"] == origin.http

            # Cluster-wide view on any node (operator-only: unauthenticated is refused).
            async with session.get(edge2.http + "/api/cluster/streams") as r:
                assert r.status == 401
            async with session.get(edge2.http + "/api/play/live/s?protocol=ws") as r:
                assert r.status == 200
                body = await r.json()
                assert body["node"] in ("edge-1", "edge-2")
                assert body["url"].startswith("ws://127.0.0.1:") and body["url"].endswith("/s.flv")
            # LL-HLS is packaged by every hub: an edge is chosen for it as for FLV
            async with session.get(edge2.http + "/api/play/live/s?protocol=hls") as r:
                body = await r.json()
                assert body["role"] == "edge" and body["url"].endswith("/live/s.m3u8")

            # The last viewer of edge 1 leaves: its pull stops after the idle linger (1 s).
            for v in viewers[:4]:
                await v.close()
            await wait_for(lambda: upstreams_are(1), 10)
            await wait_for(lambda: stream_gone(c, edge1), 10)
            assert await c.stream_viewers(edge2) == 4
            assert all(v.ended is None for v in viewers[4:])
            # A viewer coming back starts a fresh pull.
            again = FlvViewer(session, edge1.flv_url("s"))
            await wait_for(lambda: len(again.video()) > 10, 15)
            await wait_for(lambda: upstreams_are(2), 10)
            await again.close()
            for v in viewers[4:]:
                await v.close()
            await wait_for(lambda: upstreams_are(0), 10)
        finally:
            await stop(anchor)


async def stream_gone(c: Cluster, node: object) -> bool:
    from tests.cluster.harness import Node

    assert isinstance(node, Node)
    return await c.stream_viewers(node) is None


async def test_origin_dies_anchor_republishes_elsewhere_viewers_resume(
    tmp_path: Path, clip: Path
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin_a = await c.start("origin-a", "origin")
        origin_b = await c.start("origin-b", "origin")
        edge1 = await c.start("edge-1", "edge")
        edge2 = await c.start("edge-2", "edge", origins=[origin_a, origin_b])
        anchor = await start_publisher(origin_a.push_url("s"), clip, loop=True)
        anchor2 = None
        try:
            await wait_for(lambda: stream_owner_is(c, "origin-a"), 15)
            viewers = [FlvViewer(session, e.flv_url("s")) for e in (edge1, edge2) for _ in range(2)]
            await wait_for(lambda: all(len(v.video()) > 30 for v in viewers), 20)

            # The origin dies with its anchor connection; the anchor republishes to B.
            await origin_a.kill(signal.SIGKILL)
            await stop(anchor)
            t0 = time.perf_counter()
            anchor2 = await start_publisher(origin_b.push_url("s"), clip, loop=True)
            await wait_for(lambda: all(len(v.video_after(t0)) > 15 for v in viewers), 15)
            resumed = [v.video_after(t0)[0].at - t0 for v in viewers]
            assert max(resumed) <= 5.0, resumed
            # Same connections throughout, and a timeline that never goes back.
            assert all(v.ended is None for v in viewers), [v.ended for v in viewers]
            for v in viewers:
                ts = [t.ts for t in v.video()]
                assert ts == sorted(ts)
            await wait_for(lambda: stream_owner_is(c, "origin-b"), 20)

            async def pulls_from_b(e: Any) -> bool:
                # node registrations are up to one heartbeat old: wait for the next one
                info = await c.info(e)
                return info is not None and (
                    info.streams.get("live/s", {}).get("upstream") == origin_b.http
                )

            for e in (edge1, edge2):
                await wait_for(lambda e=e: pulls_from_b(e), 10)
            print(f"viewers resumed {', '.join(f'{r:.2f}' for r in resumed)} s after republish")

            # Scheduler: both edges are candidates; a killed edge stops being chosen.
            async def chosen(n: int = 12) -> set[str]:
                out = set()
                for _ in range(n):
                    async with session.get(origin_b.http + "/api/play/live/s") as r:
                        assert r.status == 200, await r.text()
                        out.add((await r.json())["node"])
                return out

            assert (await chosen()) <= {"edge-1", "edge-2"}
            async with session.get(
                origin_b.http + "/api/play/live/s?protocol=rtmp&redirect=1", allow_redirects=False
            ) as r:
                assert r.status == 302
                assert r.headers["Location"].startswith("rtmp://127.0.0.1:")
            async with session.get(origin_b.http + "/api/play/live/nothing") as r:
                assert r.status == 404
            await edge2.kill(signal.SIGKILL)
            t_kill = time.perf_counter()

            async def only_edge1() -> bool:
                return await chosen(30) == {"edge-1"}  # 30 picks: not by luck

            await wait_for(only_edge1, TTL + 5)
            print(f"dead edge dropped by the scheduler after {time.perf_counter() - t_kill:.2f} s")
            assert await chosen(30) == {"edge-1"}
        finally:
            await stop(anchor)
            if anchor2 is not None:
                await stop(anchor2)


async def test_latency_added_per_hop_on_loopback(tmp_path: Path, clip: Path) -> None:
    """Frames followed (by digest) from our RTMP publisher through a viewer of the origin
    to a viewer of an edge: each frame the edge delivers went through the origin first, in
    the same order, and none is lost on the way. The added latency per hop (one clock, one
    process) is printed; its budget is a benchmark's business (bench/cluster), not a test's."""
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin = await c.start("origin-a", "origin")
        edge = await c.start("edge-1", "edge", origins=[origin])
        anchor = RtmpPublisher(origin.push_url("s"), clip)
        try:
            await wait_for(lambda: stream_owner_is(c, "origin-a"), 15)
            at_origin = FlvViewer(session, origin.flv_url("s"))
            at_edge = FlvViewer(session, edge.flv_url("s"))
            await wait_for(lambda: len(at_edge.video()) > 0 and len(at_origin.video()) > 0, 15)
            # past the GOP bursts of the preludes: frames both viewers got live
            origin_start, edge_start = len(at_origin.tags), len(at_edge.tags)

            def live_frames() -> tuple[list, list]:
                return at_origin.tags[origin_start:], at_edge.tags[edge_start:]

            await wait_for(lambda: min(map(len, live_frames())) > 150, 20)
            sent = dict(anchor.sent)
            via_origin, via_edge = live_frames()
            first = {t.digest: t.at for t in via_origin}
            # video frames (each picture differs; a steady tone's audio frames may repeat):
            # the edge's, from the first one the origin viewer also got live, are the
            # origin's in the same order with none missing
            origin_video = [t.digest for t in via_origin if t.kind == 9]
            relayed = [t.digest for t in via_edge if t.kind == 9 and t.digest in first]
            assert len(relayed) > 30, (len(relayed), len(via_edge))
            start = origin_video.index(relayed[0])
            assert relayed == origin_video[start : start + len(relayed)], "lost or reordered"
            ingest = [first[d] - sent[d] for d in first if d in sent]
            relay = [t.at - first[t.digest] for t in via_edge if t.digest in first]
            assert len(ingest) > 100, len(ingest)
            report = []
            for name, values in (("anchor -> origin", ingest), ("origin -> edge", relay)):
                ms = sorted(v * 1000 for v in values)
                med, p95 = statistics.median(ms), ms[int(len(ms) * 0.95)]
                report.append(f"{name}: median {med:.1f} ms, p95 {p95:.1f} ms ({len(ms)} frames)")
            print("; ".join(report))
            await at_origin.close()
            await at_edge.close()
        finally:
            await anchor.close()


async def test_origin_forwards_to_an_external_rtmp_server_and_reconnects(
    tmp_path: Path, clip: Path
) -> None:
    """An origin pushes its stream to another RTMP server (standing in for a third-party
    CDN: another berrylive outside this cluster); the destination dies and comes back on
    the same port; the forward reconnects by itself."""
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        outside = {"BERRYLIVE_RELAY_CLUSTER_PREFIX": c.prefix + "cdn:"}
        cdn = await c.start("cdn", "origin", **outside)
        rule = f"live/s={cdn.push_url('s')}"
        origin = await c.start("origin-a", "origin", BERRYLIVE_RELAY_FORWARD=rule)
        anchor = await start_publisher(origin.push_url("s"), clip, loop=True)
        try:

            async def forwarded_to(node: Node) -> bool:
                async with session.get(node.http + "/healthz") as r:
                    assert r.status == 200
                return "publishing live/s" in node.logs()

            await wait_for(lambda: forwarded_to(cdn), 20, 0.2)
            counts = await probe_live(cdn.flv_url("s"))
            assert counts.get("video", 0) >= 30 and counts.get("audio", 0) >= 30, counts
            port = cdn.rtmp_port
            await cdn.kill(signal.SIGKILL)
            cdn2 = await c.start("cdn-2", "origin", rtmp_port=port, **outside)
            await wait_for(lambda: forwarded_to(cdn2), 40, 0.5)
            counts = await probe_live(cdn2.flv_url("s"))
            assert counts.get("video", 0) >= 30 and counts.get("audio", 0) >= 30, counts
            assert "forward live/s" in origin.logs() and "retry in" in origin.logs()

            # Per-broadcast rules (Redis, what PUT /api/cluster/forwards/... writes): applied
            # by the origin holding the stream within a heartbeat, and removed again.
            anchor2 = await start_publisher(origin.push_url("d"), clip, loop=True)
            try:
                await wait_for(lambda: stream_owner_is(c, "origin-a", "live/d"), 15)
                store = ForwardStore(c.redis, c.prefix)
                await store.put("live/d", [cdn2.push_url("d")])
                await wait_for(lambda: "publishing live/d" in cdn2.logs(), 15, 0.2)

                async def forward_viewers(n: int) -> bool:
                    return await c.stream_viewers(origin, "live/d") == n

                await wait_for(lambda: forward_viewers(1), 10)
                await store.put("live/d", [])
                await wait_for(lambda: forward_viewers(0), 10)
            finally:
                await stop(anchor2)
        finally:
            await stop(anchor)


async def test_anchor_stops_edge_viewers_end_without_replaying_the_old_gop(
    tmp_path: Path, clip: Path
) -> None:
    """The origin lingers 60 s for the anchor; the edge (silent upstream after 1 s) must not
    re-pull that lingering hub (its cached GOP again): the origin released its claim when the
    anchor left, so the edge gives up and its viewers see the end after its own 2 s linger,
    long before the origin's hub would expire (no wall-clock race: 60 s against 20)."""
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin = await c.start("origin-a", "origin", BERRYLIVE_RELAY_PUBLISHER_LINGER="60")
        edge = await c.start(
            "edge-1", "edge", origins=[origin],
            BERRYLIVE_RELAY_PUBLISHER_LINGER="2", BERRYLIVE_RELAY_PULL_READ_TIMEOUT="1",
        )  # fmt: skip
        anchor = await start_publisher(origin.push_url("s"), clip, loop=True)
        try:
            await wait_for(lambda: stream_owner_is(c, "origin-a"), 15)
            viewer = FlvViewer(session, edge.flv_url("s"))
            await wait_for(lambda: len(viewer.video()) > 30, 15)
        finally:
            await stop(anchor)
        t0 = time.perf_counter()
        await wait_for(lambda: stream_owner_is(c, None), 5)
        await wait_for(lambda: viewer.ended is not None, 20)  # the origin still lingers
        assert viewer.ended == "eof", viewer.ended
        assert not viewer.video_after(t0 + 0.5), "stale GOP replayed"
        assert "pulling live/s" in edge.logs()
        assert edge.logs().count("edge: pulling live/s") == 1, edge.logs()


async def test_edge_pulls_over_rtmp_from_a_configured_origin(tmp_path: Path, clip: Path) -> None:
    """An edge outside the origin's directory (its own cluster prefix) with an ``rtmp://``
    origin: it pulls over RTMP; PyAV plays from it; one upstream for several viewers."""
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        origin = await c.start("origin-a", "origin")
        edge = await c.start(
            "edge-rtmp", "edge", BERRYLIVE_RELAY_CLUSTER_PREFIX=c.prefix + "elsewhere:",
            BERRYLIVE_RELAY_ORIGINS=origin.rtmp,
        )  # fmt: skip
        anchor = await start_publisher(origin.push_url("s"), clip, loop=True)
        try:
            await wait_for(lambda: stream_owner_is(c, "origin-a"), 15)
            viewers = [FlvViewer(session, edge.flv_url("s")) for _ in range(3)]
            counts = await probe_live(edge.flv_url("s"))
            assert counts.get("video", 0) >= 30 and counts.get("audio", 0) >= 30, counts
            await wait_for(lambda: all(len(v.video()) > 30 for v in viewers), 15)
            assert f"pulling live/s from {origin.rtmp}" in edge.logs()

            async def one_upstream() -> bool:  # the RTMP pull, whatever the edge's viewers
                return await c.stream_viewers(origin) == 1

            await wait_for(one_upstream, 10)
            for v in viewers:
                ts = [t.ts for t in v.video()]
                assert ts == sorted(ts)
                await v.close()
        finally:
            await stop(anchor)
