"""The packager as a hub consumer, in memory: attached before the first frame (origins),
a consumer not a viewer, and a packaging failure never reaches the hub's other viewers."""

from __future__ import annotations

from dataclasses import replace

from media.frame import Kind
from relay.config import RelayConfig
from relay.formats import HTTP_FLV_10
from relay.hls import HlsService
from relay.hub import PublisherInfo, StreamRegistry, Viewer, ViewerInfo
from tests.media.test_fmp4 import AVC_HEADER, video_payload
from tests.relay.hls_check import parse
from tests.relay.test_hub import MemTransport, tags


def setup() -> tuple[StreamRegistry, HlsService]:
    reg = StreamRegistry(replace(RelayConfig(), write_coalesce_ms=0), linger_seconds=0.05)
    service = HlsService(reg, reg.config)
    service.package_always(True)
    return reg, service


def push_gops(pub, start: int, gops: int) -> int:  # type: ignore[no-untyped-def]
    ts = start
    for g in range(gops):
        for i in range(30):  # 1 s GOPs at 30 fps
            pub.push(Kind.VIDEO, ts, video_payload(i == 0, 0, 50, g * 30 + i))
            ts += 33
    return ts


async def test_an_origin_packages_from_the_first_frame_as_a_consumer() -> None:
    reg, service = setup()
    pub = reg.publish("live", "a", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, AVC_HEADER)
    push_gops(pub, 0, 6)
    hub = reg.get("live", "a")
    assert hub is not None
    pkg = service.packager(hub)
    assert pkg is not None
    pl = parse(pkg.playlist.render())
    assert pl.media_sequence == 0 and len([s for s in pl.segments if s.duration]) >= 2
    assert pl.segments[0].parts[0]["INDEPENDENT"] == "YES"
    assert hub.audience == 0 and hub.stats()["consumers"] == {"hls": 1}
    service.close()
    assert service.packager(hub) is None and hub.stats()["consumers"] == {}


async def test_a_packaging_failure_stops_packaging_not_the_fan_out() -> None:
    reg, service = setup()
    pub = reg.publish("live", "b", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, AVC_HEADER)
    ts = push_gops(pub, 0, 1)
    hub = reg.get("live", "b")
    assert hub is not None
    t = MemTransport()
    viewer = Viewer(t, HTTP_FLV_10, ViewerInfo("flv"))
    hub.add_viewer(viewer, hub.flv_prelude(HTTP_FLV_10))
    pkg = service.packager(hub)
    assert pkg is not None

    class Broken:
        def push(self, frame: object) -> list[object]:
            raise RuntimeError("planted packaging bug")

    pkg.cutter = Broken()  # type: ignore[assignment]
    before = len(tags(t))
    push_gops(pub, ts, 1)
    assert len(tags(t)) == before + 30  # the FLV viewer got every frame
    assert pkg.closed and service.packager(hub) is None
    assert hub.viewers == {viewer}
    # the next request starts packaging afresh (from the GOP cache)
    again = service.ensure(hub)
    assert again is not pkg and not again.playlist.empty
    service.close()
