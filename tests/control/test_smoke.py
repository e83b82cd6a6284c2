from __future__ import annotations


async def test_login_and_create(staff) -> None:
    status, me = await staff.api.call("GET", "/api/me", staff.operator)
    assert status == 200 and me["role"] == "operator"
    b = await staff.create_broadcast(anchor_id=staff.ids["anchor"])
    assert b["state"] == "scheduled" and b["stream"] == f"b{b['id']}"
    status, push = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.anchor)
    assert status == 200, push
    print(push)
