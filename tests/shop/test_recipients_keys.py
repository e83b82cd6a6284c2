"""Recipient sealing and masking on their own: the key file, rotation and re-sealing of
what is stored (SQLite and PostgreSQL), tampering, and property tests of the parser and
the masks."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shop_bridge.masking import (
    Recipient,
    RecipientError,
    mask,
    mask_phone,
    normalise_phone,
    parse_recipient,
)
from shop_bridge.recipients import (
    KeyError_,
    Sealer,
    load_sealer,
    order_aad,
    parse_key_file,
    rewrap,
)
from tests.shop.conftest import ShopEnv, make_product, uid
from tests.shop.order_core_ports import server_factory  # noqa: F401

R = Recipient("张三", "13812345678", "广东省深圳市南山区科苑路15号")


def _line(kid: str) -> str:
    return f"{kid} {base64.b64encode(os.urandom(32)).decode()}"


def test_key_file_lines_and_errors() -> None:
    keys = parse_key_file(f"# keys\n{_line('a')}\n\n{_line('b-2026')}\n")
    assert [k for k, _ in keys] == ["a", "b-2026"]
    for bad in (
        "",
        "a notbase64!!",
        f"a {base64.b64encode(b'short').decode()}",
        f"{_line('a')}\n{_line('a')}",
        f"bad/id {base64.b64encode(os.urandom(32)).decode()}",
        "a b c",
    ):
        with pytest.raises(ValueError):
            parse_key_file(bad)


def test_rotation_opens_old_envelopes_and_refuses_tampering(tmp_path: Path) -> None:
    old = load_sealer("", "server-secret")
    env = old.seal_recipient(R, order_aad("o1"))
    assert env.startswith(f"v1.{old.current}.") and old.current.startswith("s-")
    assert "13812345678" not in env and "张三" not in env
    keyfile = tmp_path / "keys"
    keyfile.write_text(_line("k1") + "\n" + _line("k2") + "\n")
    new = load_sealer(str(keyfile), "server-secret")
    assert new.current == "k2"
    assert new.open_recipient(env, order_aad("o1")) == R  # sealed under the secret's key
    env2 = new.seal_recipient(R, order_aad("o1"))
    assert Sealer.kid_of(env2) == "k2"
    # another secret: the old envelope's key is unknown
    with pytest.raises(KeyError_, match="does not have"):
        load_sealer("", "another-secret").open(env, order_aad("o1"))
    # tampered, or moved to another record
    body = env2.split(".")[2]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad, aad in (
        (f"v1.k2.{flipped}", order_aad("o1")),
        (env2, order_aad("o2")),
        ("v2.k2.xx", order_aad("o1")),
        ("plaintext", order_aad("o1")),
    ):
        with pytest.raises(KeyError_):
            new.open(bad, aad)
    # two seals of the same value differ (random nonce)
    assert new.seal_recipient(R, order_aad("o1")) != env2


def test_keygen_prints_a_key_file_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shop_bridge.recipient_keys", "keygen", "2026-12"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [k for k, _ in parse_key_file(out)] == ["2026-12"]


async def test_rewrap_moves_stored_recipients_to_the_new_key(
    shop_factory: Any, tmp_path: Path
) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=True)
    api = shop.api
    buyer = uid("u")
    product = await make_product(api)
    body = {
        "user_id": buyer,
        "sku_id": product["skus"][0]["id"],
        "quantity": 1,
        "idempotency_key": "k1",
        "recipient": R.as_dict(),
    }
    order = await api.ok("POST", "/api/orders", body, 201, token=None)
    await api.ok("POST", "/api/me/addresses", R.as_dict(), 201, token=None, viewer=buyer)
    old = shop.svc.recipients.sealer
    keyfile = tmp_path / "keys"
    keyfile.write_text(_line("k2") + "\n")
    secret = shop.server.config.server.secret
    rotated = load_sealer(str(keyfile), secret)
    first = await rewrap(shop.svc.ctx.engine, rotated)
    assert (first.rewrapped, first.left, first.unreadable) == (2, 0, 0)
    again = await rewrap(shop.svc.ctx.engine, rotated)
    assert (again.rewrapped, again.left) == (0, 0)  # safe to repeat
    row = await shop.svc.ctx.book.get(order["id"])
    assert row is not None and Sealer.kid_of(row["recipient"]) == "k2"
    # the old key can go: a sealer with only the new key opens everything
    only_new = Sealer(parse_key_file(keyfile.read_text()))
    assert only_new.open_recipient(row["recipient"], order_aad(order["id"])) == R
    with pytest.raises(KeyError_):
        old.open(row["recipient"], order_aad(order["id"]))
    shop.svc.recipients.sealer = only_new
    shop.svc.addresses.sealer = only_new
    full = await api.ok("GET", f"/api/orders/{order['id']}/recipient")
    assert full["recipient"] == R.as_dict()
    book = await api.ok("GET", "/api/me/addresses", token=None, viewer=buyer)
    assert book["items"][0]["address"] == R.address
    # a sealer missing the key reports what is left
    stray = await rewrap(shop.svc.ctx.engine, load_sealer("", "x"))
    assert (stray.rewrapped, stray.left, stray.unreadable) == (0, 2, 2)


# -- property tests of the parser and the masks --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["name", "phone", "address", "x"]), json_values) | json_values
)
def test_parse_recipient_never_crashes(data: Any) -> None:
    try:
        r = parse_recipient(data)
    except RecipientError as exc:
        assert exc.field.startswith("recipient")
        return
    assert 1 <= len(r.name) <= 50 and 5 <= len(r.address) <= 200


@given(st.text(max_size=40))
def test_phone_garbage_never_crashes(raw: str) -> None:
    try:
        phone = normalise_phone(raw)
    except RecipientError:
        return
    assert (phone.isdigit() and len(phone) == 11) or phone.startswith("+")


cn_mobile = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
intl = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
names = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo")), min_size=1, max_size=50)
addresses = st.text(
    st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd")), min_size=5, max_size=200
)


@given(names, cn_mobile | intl, addresses)
def test_masks_hide_the_middle(name: str, phone: str, address: str) -> None:
    r = parse_recipient({"name": name, "phone": phone, "address": address})
    m = mask(r)
    assert "****" in m["phone"] and len(m["phone"]) == len(r.phone)
    assert sum(a == b for a, b in zip(m["phone"], r.phone, strict=True)) <= 7
    if not r.phone.startswith("+"):
        assert m["phone"] == r.phone[:3] + "****" + r.phone[-4:]
    assert m["name"][0] == r.name[0] or m["name"] == "*"
    assert m["name"] != r.name or (len(r.name) == 1 and r.name == "*")
    assert m["address"].endswith("****") or m["address"].startswith("****")
    assert m["address"].replace("*", "") != r.address


def test_mask_examples() -> None:
    assert mask(R) == {"name": "张*", "phone": "138****5678", "address": "广东省深圳市****"}
    assert mask_phone("+447911123456") == "+44******3456"


async def test_rewrap_command_line(shop_factory: Any, tmp_path: Path) -> None:
    shop: ShopEnv = await shop_factory()
    api = shop.api
    product = await make_product(api)
    body = {
        "user_id": uid("u"),
        "sku_id": product["skus"][0]["id"],
        "quantity": 1,
        "idempotency_key": "k1",
        "recipient": R.as_dict(),
    }
    order = await api.ok("POST", "/api/orders", body, 201, token=None)
    keyfile = tmp_path / "keys"
    keyfile.write_text(_line("cli1") + "\n")
    url = shop.svc.ctx.engine.url.render_as_string(hide_password=False)
    config = tmp_path / "berrylive.toml"
    secret = shop.server.config.server.secret
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nsecret = "{secret}"\n'
        f'[database]\nurl = "{url}"\n[shop]\nrecipient_key_file = "{keyfile}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    done = subprocess.run(
        [sys.executable, "-m", "shop_bridge.recipient_keys", "rewrap", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "re-sealed 1, left 0" in done.stdout
    row = await shop.svc.ctx.book.get(order["id"])
    assert row is not None and Sealer.kid_of(row["recipient"]) == "cli1"
