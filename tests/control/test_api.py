"""REST: broadcasts CRUD, validation errors, pagination, push URLs and QR, covers, play
URLs, reminders, danmaku tokens, users, the OpenAPI document and /metrics."""

from __future__ import annotations

import struct
import time

from core.tokens import issue_token, verify_token
from ingest import auth as ingest_auth
from shop_bridge.events import OrderPaid
from tests.conftest import TEST_SECRET

PNG_1PX = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


async def test_crud_validation_and_pagination(staff) -> None:
    api, op = staff.api, staff.operator
    bad = [
        ({}, "title is required"),
        ({"title": "x"}, "scheduled_start is required"),
        ({"title": "x", "scheduled_start": "tomorrow"}, "RFC 3339"),
        ({"title": "x", "scheduled_start": "2030-01-01T10:00:00"}, "time zone"),
        ({"title": "x", "scheduled_start": "1970-01-01T10:00:00Z"}, "2000 and 2100"),
        ({"title": "a\x00b", "scheduled_start": "2030-01-01T10:00:00Z"}, "control characters"),
        (
            {
                "title": "x",
                "scheduled_start": "2030-01-01T10:00:00Z",
                "scheduled_end": "2030-01-01T09:00:00Z",
            },
            "after",
        ),
        (
            {"title": "x", "scheduled_start": "2030-01-01T10:00:00Z", "product_ids": [1, 1]},
            "repeat",
        ),
        (
            {
                "title": "x",
                "scheduled_start": "2030-01-01T10:00:00Z",
                "anchor_id": staff.ids["moderator"],
            },
            "not an anchor",
        ),
        (
            {"title": "x", "scheduled_start": "2030-01-01T10:00:00Z", "color": "red"},
            "unknown field",
        ),
    ]
    for body, message in bad:
        status, err = await api.call("POST", "/api/broadcasts", op, json=body)
        assert status == 400, body
        assert message in err["error"]["message"], (body, err)
    status, err = await api.call(
        "POST", "/api/broadcasts", op, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and err["error"]["code"] == "bad_json"

    made = [
        await staff.create_broadcast(
            title=f"show {i}", scheduled_start=f"2030-01-0{i + 1}T10:00:00+08:00"
        )
        for i in range(5)
    ]
    status, page = await api.call("GET", "/api/broadcasts?limit=2&offset=0", op)
    assert status == 200 and page["total"] == 5 and page["next_offset"] == 2
    assert [b["title"] for b in page["items"]] == ["show 0", "show 1"]
    status, page = await api.call("GET", "/api/broadcasts?limit=2&offset=4", op)
    assert [b["title"] for b in page["items"]] == ["show 4"] and page["next_offset"] is None
    status, page = await api.call(
        "GET", "/api/broadcasts?from=2030-01-02T00:00:00Z&to=2030-01-04T00:00:00Z", op
    )
    assert [b["title"] for b in page["items"]] == ["show 1", "show 2"]
    for q in ("limit=0", "limit=101", "offset=-1", "state=flying", "from=yesterday"):
        status, err = await api.call("GET", f"/api/broadcasts?{q}", op)
        assert status == 400, q
    status, err = await api.call("GET", "/api/broadcasts/999999", op)
    assert status == 404 and err["error"]["code"] == "not_found"
    status, err = await api.call("GET", "/api/broadcasts/abc", op)
    assert status == 404

    b = made[0]
    status, edited = await api.call(
        "PATCH",
        f"/api/broadcasts/{b['id']}",
        op,
        json={"title": "renamed", "settings": {"comments": False}, "product_ids": [7, 8]},
    )
    assert status == 200 and edited["title"] == "renamed"
    assert edited["settings"] == {"comments": False, "likes": True, "replay": True, "sharing": True}
    assert edited["product_ids"] == [7, 8]
    status, _ = await api.call("DELETE", f"/api/broadcasts/{b['id']}", op)
    assert status == 204
    status, _ = await api.call("GET", f"/api/broadcasts/{b['id']}", op)
    assert status == 404


async def test_push_urls_rotation_qr_and_play(staff) -> None:
    api = staff.api
    b = await staff.create_broadcast(
        anchor_id=staff.ids["anchor"],
        scheduled_start="2030-01-01T12:00:00Z",
        scheduled_end="2030-01-01T14:00:00Z",
    )
    status, p = await api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
    assert status == 200
    assert p["not_before"] == "2030-01-01T11:30:00Z"  # 30 min before the start
    assert p["expires_at"] == "2030-01-01T15:00:00Z"  # one hour after the end
    query = p["url"].split("?", 1)[1]
    redis = staff.server.runtime.redis
    kv = await ingest_auth.current_key_version(redis, b["app"], b["stream"])
    start = 1893499200  # 2030-01-01T12:00:00Z
    ok = ingest_auth.verify(TEST_SECRET, b["app"], b["stream"], query, start, key_version=kv)
    assert ok.ok, ok
    early = ingest_auth.verify(
        TEST_SECRET, b["app"], b["stream"], query, start - 3600, key_version=kv
    )
    assert not early.ok and "not valid before" in early.reason
    late = ingest_auth.verify(
        TEST_SECRET, b["app"], b["stream"], query, start + 4 * 3600, key_version=kv
    )
    assert not late.ok and "expired" in late.reason
    assert p["server"] + "/" + p["stream_key"] == p["url"]

    status, rotated = await api.call("POST", f"/api/broadcasts/{b['id']}/push/rotate", staff.anchor)
    assert status == 200 and rotated["url"] != p["url"]
    kv2 = await ingest_auth.current_key_version(redis, b["app"], b["stream"])
    old = ingest_auth.verify(TEST_SECRET, b["app"], b["stream"], query, start, key_version=kv2)
    assert not old.ok and "revoked" in old.reason
    new_query = rotated["url"].split("?", 1)[1]
    assert ingest_auth.verify(
        TEST_SECRET, b["app"], b["stream"], new_query, start, key_version=kv2
    ).ok

    status, png = await api.call(
        "GET", f"/api/broadcasts/{b['id']}/push/qr.png?scale=4", staff.anchor
    )
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and width % 4 == 0 and width >= 4 * 21
    status, svg = await api.call("GET", f"/api/broadcasts/{b['id']}/push/qr.svg", staff.anchor)
    assert status == 200 and svg.startswith(b"<svg") and b"<path" in svg

    status, play = await api.call("GET", f"/api/broadcasts/{b['id']}/play", staff.moderator)
    assert status == 200
    assert play["http_flv"].endswith(f"/{b['app']}/{b['stream']}.flv")
    assert play["ws_flv"].startswith("ws://") and play["hls"].endswith(".m3u8")
    assert play["rtmp"].startswith("rtmp://")

    status, revoked = await api.call(
        "POST", f"/api/broadcasts/{b['id']}/push/revoke", staff.operator
    )
    assert status == 200 and revoked["push_revoked"] is True
    status, _err = await api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
    assert status == 409


async def test_cover_upload(staff) -> None:
    api = staff.api
    b = await staff.create_broadcast(anchor_id=staff.ids["anchor"])
    status, err = await api.call(
        "PUT",
        f"/api/broadcasts/{b['id']}/cover",
        staff.anchor,
        data=b"GIF89a....",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 400 and err["error"]["code"] == "not_an_image"
    status, err = await api.call(
        "PUT",
        f"/api/broadcasts/{b['id']}/cover",
        staff.anchor,
        data=PNG_1PX,
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    status, body = await api.call(
        "PUT",
        f"/api/broadcasts/{b['id']}/cover",
        staff.anchor,
        data=PNG_1PX,
        headers={"Content-Type": "image/png"},
    )
    assert status == 200 and body["cover_url"] == f"/api/broadcasts/{b['id']}/cover"
    stored = list((staff.server.runtime.data_dir / "covers").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == PNG_1PX
    status, img = await api.call("GET", body["cover_url"])  # public
    assert status == 200 and img == PNG_1PX
    big = PNG_1PX + b"\x00" * (6 * 1024 * 1024)
    status, err = await api.call(
        "PUT",
        f"/api/broadcasts/{b['id']}/cover",
        staff.anchor,
        data=big,
        headers={"Content-Type": "image/png"},
    )
    assert status == 413
    status, _ = await api.call("DELETE", f"/api/broadcasts/{b['id']}/cover", staff.operator)
    assert status == 204
    assert list((staff.server.runtime.data_dir / "covers").iterdir()) == []


async def test_reminders_and_danmaku_tokens(staff) -> None:
    api = staff.api
    b = await staff.create_broadcast(anchor_id=staff.ids["anchor"])
    path = f"/api/broadcasts/{b['id']}/reminders"

    def viewer(uid: str) -> dict[str, str]:
        return {"X-Viewer-Token": issue_token(TEST_SECRET, uid, uid)}

    # a viewer subscribes themselves (named by their token, or naming themselves)
    status, r = await api.call("POST", path, json={}, headers=viewer("o-123"))
    assert status == 201 and r["subscribed"] is True and r["subscriber"] == "o-123"
    status, r = await api.call("POST", path, json={"subscriber": "o-123"}, headers=viewer("o-123"))
    assert status == 200 and r["subscribed"] is False
    # nobody subscribes anonymously, or in someone else's name
    status, r = await api.call("POST", path, json={"subscriber": "o-999"})
    assert status == 401, r
    status, r = await api.call("POST", path, json={"subscriber": "o-999"}, headers=viewer("o-1"))
    assert status == 403, r
    status, r = await api.call("POST", path, json={}, headers={"X-Viewer-Token": "forged.token"})
    assert status == 401, r
    # an operator (an app backend) names the subscriber; it must be well formed
    status, r = await api.call("POST", path, staff.operator, json={"subscriber": "o-777"})
    assert status == 201, r
    status, _ = await api.call("POST", path, staff.operator, json={"subscriber": "has space"})
    assert status == 400
    status, r = await api.call("POST", path, staff.anchor, json={"subscriber": "o-778"})
    assert status == 401, r
    status, got = await api.call("GET", f"/api/broadcasts/{b['id']}", staff.operator)
    assert got["reminder_count"] == 2
    # nobody removes someone else's reminder
    status, _ = await api.call("DELETE", f"{path}/o-123")
    assert status == 401
    status, _ = await api.call("DELETE", f"{path}/o-123", headers=viewer("o-777"))
    assert status == 403
    status, _ = await api.call("DELETE", f"{path}/o-123", headers=viewer("o-123"))
    assert status == 204
    status, _ = await api.call("DELETE", f"{path}/o-123", headers=viewer("o-123"))
    assert status == 404
    status, _ = await api.call("DELETE", f"{path}/o-777", staff.operator)
    assert status == 204
    status, got = await api.call("GET", f"/api/broadcasts/{b['id']}", staff.operator)
    assert got["reminder_count"] == 0

    status, t = await api.call("POST", f"/api/broadcasts/{b['id']}/danmaku-token", staff.anchor)
    assert status == 200 and t["room"] == f"{b['app']}/{b['stream']}"
    viewer = verify_token(TEST_SECRET, t["token"])
    assert viewer.role.value == "anchor" and viewer.room == t["room"]
    status, t = await api.call(
        "POST",
        f"/api/broadcasts/{b['id']}/viewer-token",
        staff.operator,
        json={"user_id": "openid-9", "nick": "Mei", "ttl": 600},
    )
    assert status == 200
    viewer = verify_token(TEST_SECRET, t["token"])
    assert viewer.role.value == "viewer" and viewer.user_id == "openid-9"
    assert viewer.expires <= time.time() + 601


async def test_users_api(staff) -> None:
    api, op = staff.api, staff.operator
    status, u = await api.call(
        "POST",
        "/api/users",
        op,
        json={"username": "mei", "password": "long enough pw", "role": "anchor"},
    )
    assert status == 201 and u["role"] == "anchor" and "password" not in u
    status, err = await api.call(
        "POST",
        "/api/users",
        op,
        json={"username": "MEI", "password": "long enough pw", "role": "anchor"},
    )
    assert status == 409
    status, err = await api.call(
        "POST", "/api/users", op, json={"username": "li", "password": "short", "role": "anchor"}
    )
    assert status == 400 and err["error"]["code"] == "weak_password"
    status, page = await api.call("GET", "/api/users?role=anchor", op)
    assert {x["username"] for x in page["items"]} == {"anchor1", "mei"}
    status, err = await api.call(
        "PATCH", f"/api/users/{staff.ids['operator']}", op, json={"role": "anchor"}
    )
    assert status == 409  # cannot demote yourself
    b = await staff.create_broadcast(anchor_id=u["id"])
    status, err = await api.call("DELETE", f"/api/users/{u['id']}", op)
    assert status == 409  # anchors a broadcast
    await api.call("DELETE", f"/api/broadcasts/{b['id']}", op)
    status, _ = await api.call("DELETE", f"/api/users/{u['id']}", op)
    assert status == 204


async def test_openapi_docs_and_metrics(staff) -> None:
    status, spec = await staff.api.call("GET", "/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    ops = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "responses" in op
    ]
    assert len(ops) > 40
    for path, method, op in ops:
        assert op["x-roles"], (path, method)
        if "public" not in op["x-roles"]:
            assert "401" in op["responses"] and "403" in op["responses"], (path, method)
    status, html = await staff.api.call("GET", "/api/docs")
    assert status == 200 and b"openapi.json" in html
    status, text = await staff.api.call("GET", "/metrics")
    assert status == 200
    for name in (
        b"berrylive_streams",
        b'berrylive_viewers{protocol="flv"}',
        b"berrylive_broadcasts{",
        b"berrylive_comments_total",
        b"berrylive_likes_total",
        b"berrylive_orders_paid_total",
        b"berrylive_paid_fen_total",
        b"berrylive_refunded_fen_total",
        b"berrylive_webhook_failures_total",
    ):
        assert name in text, name
    # counters from the bus: a paid sale counts (a lottery prize does not); the broadcast's
    # sales figures come from the shop's order records (tests/shop/test_gmv.py), not events
    b = await staff.create_broadcast()
    bus = staff.server.runtime.bus

    def paid(broadcast_id: object, amount_fen: int, kind: str = "normal") -> OrderPaid:
        return OrderPaid(
            order_id=f"o{amount_fen}", state="paid", kind=kind, user_id="u1",
            broadcast_id=broadcast_id, anchor_id="", product_id=1, sku_id=1,  # type: ignore[arg-type]
            flash_sale_id=None, quantity=1, amount_fen=amount_fen, card_id=None,
            channel="live", actor="u1", ts=time.time(),
        )  # fmt: skip

    await bus.emit(paid(b["id"], 1990))
    await bus.emit(paid(b["id"], 10))
    await bus.emit(paid(b["id"], 0, kind="prize"))
    room = f"{b['app']}/{b['stream']}"
    await bus.publish("danmaku.like", {"room": room, "broadcast_id": str(b["id"]), "count": 5})
    # a count whose event names no broadcast is credited to its room's broadcast
    await bus.publish("danmaku.like", {"room": room, "count": 2})
    await bus.drain()
    status, text = await staff.api.call("GET", "/metrics")
    assert b"berrylive_orders_paid_total 2.0" in text
    assert b"berrylive_paid_fen_total 2000.0" in text
    status, stats = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/stats", staff.operator)
    assert stats["orders"] == 0 and stats["gmv_fen"] == 0 and stats["likes"] == 7
