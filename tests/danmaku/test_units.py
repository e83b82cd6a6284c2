"""Pure parts of the hub: tokens, word filter, payload validation, batches, buckets, draws."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import Role, TokenError, issue_token, verify_token
from danmaku.batch import RoomBuffer
from danmaku.draw import (
    commitment,
    draw_winners,
    entrants_digest,
    instant_ticket_wins,
    prize_index,
    verify,
)
from danmaku.payloads import PayloadError, clean_text, parse_comment, parse_like, parse_moderate
from danmaku.ratelimit import Buckets
from danmaku.wordfilter import WordFilter

SECRET = "s3cret"


# ------------------------------------------------------------------ tokens
def test_token_round_trip_and_room_binding() -> None:
    tok = issue_token(SECRET, "u1", "小明", "moderator", room="live/a", now=1000, ttl=60)
    v = verify_token(SECRET, tok, now=1030)
    assert (v.user_id, v.nick, v.role, v.room) == ("u1", "小明", Role.MODERATOR, "live/a")
    assert v.role_in("live/a") is Role.MODERATOR
    assert v.role_in("live/b") is Role.VIEWER  # a room-bound moderator is a viewer elsewhere
    op = verify_token(SECRET, issue_token(SECRET, "o", "op", "operator", room="live/a"))
    assert op.role_in("live/b") is Role.OPERATOR


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda t: t + "x", "bad_signature"),
        (lambda t: t.replace("v1.", "v2."), "bad_token"),
        (lambda t: "", "bad_token"),
        (lambda t: "a.b", "bad_token"),
        (lambda t: "v1.!!!.???", "bad_signature"),
        (lambda t: "v1.e30." + t.split(".")[2], "bad_signature"),
        (lambda t: t.split(".")[0] + "." + t.split(".")[1] + "." + "A" * 43, "bad_signature"),
    ],
)
def test_token_rejections(mutate, code) -> None:
    tok = issue_token(SECRET, "u1", "n", now=1000, ttl=60)
    with pytest.raises(TokenError) as exc:
        verify_token(SECRET, mutate(tok), now=1000)
    assert exc.value.code == code


def test_token_expiry_and_other_secret() -> None:
    tok = issue_token(SECRET, "u1", "n", now=1000, ttl=60)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, tok, now=1061)
    with pytest.raises(TokenError) as exc:
        verify_token("other", tok, now=1000)
    assert exc.value.code == "bad_signature"
    with pytest.raises(ValueError):
        issue_token(SECRET, "", "n")
    with pytest.raises(ValueError):
        issue_token(SECRET, "u", "n", "anonymous")


@given(st.text(max_size=300))
def test_verify_token_never_crashes_on_garbage(garbage: str) -> None:
    try:
        verify_token(SECRET, garbage)
    except TokenError:
        pass


# ------------------------------------------------------------------ word filter
def test_filter_masks_every_occurrence_case_and_separators() -> None:
    f = WordFilter(["bad", "傻瓜", "ab"])
    assert f.clean("this is BAD") == ("this is ***", True)
    assert f.clean("b.a.d!") == ("*****!", True)
    assert f.clean("你是傻 瓜吗") == ("你是***吗", True)
    assert f.clean("aab") == ("a**", True)
    assert f.clean("good") == ("good", False)
    assert WordFilter(["bad"], skip_separators=False).clean("b a d") == ("b a d", False)
    assert not WordFilter([])


def test_filter_overlapping_words() -> None:
    f = WordFilter(["abc", "bcd", "c"], skip_separators=False)
    assert f.clean("xabcdx")[0] == "x****x"
    assert f.clean("ccc")[0] == "***"


words_st = st.lists(
    st.text(alphabet="abcxyz坏蛋 .", min_size=1, max_size=4), min_size=1, max_size=6
)


@given(words_st, st.text(alphabet="abcxyzABC坏蛋 .!", max_size=60))
@settings(max_examples=300)
def test_filter_properties(words: list[str], text: str) -> None:
    f = WordFilter(words, skip_separators=False)
    out, changed = f.clean(text)
    assert len(out) == len(text)
    assert changed == (out != text)
    for a, b in zip(text, out, strict=True):
        assert b == a or b == "*"
    # no listed word (case-insensitively) survives
    low = "".join(c.lower() if len(c.lower()) == 1 else c for c in out)
    for w in words:
        wl = "".join(c.lower() if len(c.lower()) == 1 else c for c in w)
        assert wl not in low


@given(st.lists(st.text(min_size=1, max_size=5), max_size=5), st.text(max_size=100))
def test_filter_never_crashes_on_any_unicode(words, text) -> None:
    out, _ = WordFilter(words).clean(text)
    assert len(out) == len(text)


# ------------------------------------------------------------------ payloads
def test_parse_comment_forms_and_errors() -> None:
    assert parse_comment("  hi \n there ", 200).text == "hi there"
    assert parse_comment({"text": "x"}, 200).text == "x"
    cases = [
        (123, "bad_payload"),
        (None, "bad_payload"),
        (["a"], "bad_payload"),
        ({"text": 1}, "bad_payload"),
        ({"text": "a", "evil": 1}, "bad_payload"),
        ("   ", "empty"),
        ("\x00\x01", "empty"),
        ("x" * 201, "too_long"),
        ("x" * 10_000_000, "too_long"),
        ("bad \ud800 surrogate", "bad_encoding"),
    ]
    for data, code in cases:
        with pytest.raises(PayloadError) as exc:
            parse_comment(data, 200)
        assert exc.value.code == code, data if not isinstance(data, str) else data[:20]


def test_parse_like_and_moderate() -> None:
    assert parse_like(None, 100) == 1
    assert parse_like({"count": 7}, 100) == 7
    for bad in (0, 101, -1, "3", True, {"count": 1.5}, {"n": 1}):
        with pytest.raises(PayloadError):
            parse_like(bad, 100)
    assert parse_moderate({"action": "mute", "user_id": "u", "duration_s": 60}).duration_s == 60
    for bad in (
        None,
        {"action": "explode"},
        {"action": "mute"},
        {"action": "delete"},
        {"action": "slow_mode"},
        {"action": "ban", "user_id": 5},
        {"action": "mute", "user_id": "u", "duration_s": "long"},
        {"action": "mute", "user_id": "u", "duration_s": -1},
    ):
        with pytest.raises(PayloadError):
            parse_moderate(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(json_values)
@settings(max_examples=500)
def test_parse_comment_property(data) -> None:
    """Any JSON value: a clean, bounded, UTF-8-encodable text, or a PayloadError."""
    try:
        c = parse_comment(data, 50)
    except PayloadError as exc:
        assert exc.code in ("bad_payload", "empty", "too_long", "bad_encoding")
        return
    assert 1 <= len(c.text) <= 50
    c.text.encode("utf-8")
    assert c.text == c.text.strip()
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in c.text)


@given(st.text(max_size=400))
def test_clean_text_property(text) -> None:
    try:
        out = clean_text(text, 100)
    except PayloadError:
        return
    assert len(out) <= 100 and out.encode("utf-8")


@given(json_values)
def test_parse_like_and_moderate_never_crash(data) -> None:
    for fn in (lambda d: parse_like(d, 100), parse_moderate):
        try:
            fn(data)
        except PayloadError:
            pass


# ------------------------------------------------------------------ batches and buckets
def test_room_buffer_merges_and_samples_keeping_privileged() -> None:
    buf = RoomBuffer("r", max_comments=10, max_priority=5, rng=random.Random(1))
    for i in range(100):
        buf.add_comment({"id": f"v{i}"}, privileged=False)
        if i % 20 == 0:
            buf.add_comment({"id": f"a{i}"}, privileged=True)
    buf.add_likes(3)
    buf.add_likes(4)
    buf.add_notice({"type": "card.pushed"})
    batch = buf.flush()
    assert batch is not None
    ids = [c["id"] for c in batch["comments"]]
    assert sum(1 for i in ids if i.startswith("v")) == 10
    assert {"a0", "a20", "a40", "a60", "a80"} <= set(ids)
    assert batch["sample"] == {"rate": 0.1, "kept": 10, "seen": 100}
    assert batch["likes"] == {"total": 7, "delta": 7}
    assert batch["notices"] == [{"type": "card.pushed"}]
    privileged = [i for i in ids if i.startswith("a")]
    assert privileged == ["a0", "a20", "a40", "a60", "a80"]  # arrival order kept
    ordinary = [int(i[1:]) for i in ids if i.startswith("v")]
    assert ordinary == sorted(ordinary)
    assert buf.flush() is None  # nothing new: no frame at all


def test_buckets_refill_and_bound() -> None:
    b = Buckets(capacity=2, rate=1.0, max_keys=3)
    assert b.take("u", 0.0) == 0 and b.take("u", 0.0) == 0
    assert b.take("u", 0.0) == pytest.approx(1.0)
    assert b.take("u", 1.0) == 0
    for k in "abcdef":
        b.take(k, 2.0)
    assert len(b) == 3


# ------------------------------------------------------------------ lottery maths
def test_draw_is_deterministic_and_verifiable() -> None:
    entrants = [f"user{i}" for i in range(500)]
    seed = "ab" * 32
    w1 = draw_winners(seed, entrants, 10)
    w2 = draw_winners(seed, list(reversed(entrants)), 10)
    assert w1 == w2 and len(set(w1)) == 10
    assert draw_winners("cd" * 32, entrants, 10) != w1
    assert len(draw_winners(seed, entrants[:3], 10)) == 3
    audit = {
        "seed": seed,
        "commitment": commitment(seed),
        "mode": "timed",
        "prizes": [{"name": "a", "stock": 4}, {"name": "b", "stock": 6}],
        "entrants": entrants,
        "entrants_hash": entrants_digest(entrants),
    }
    assert verify(audit) == w1
    with pytest.raises(ValueError, match="commitment"):
        verify({**audit, "commitment": commitment("x")})
    with pytest.raises(ValueError, match="hash"):
        verify({**audit, "entrants": entrants[:-1]})
    assert [prize_index(n, [4, 6]) for n in (0, 3, 4, 9)] == [0, 0, 1, 1]
    wins = sum(instant_ticket_wins(seed, u, 0.2) for u in entrants)
    assert 60 < wins < 140


# ------------------------------------------------------------------ writer JSON
@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.integers(min_value=0, max_value=2**53))
def test_writer_comment_json_is_the_json_modules_text(nick: str, text: str, ts: int) -> None:
    """History entries and envelopes carry the same text as before orjson (json's compact,
    non-ASCII form), including the fallback for what orjson refuses (lone surrogates)."""
    import json

    from danmaku.writer import _dumps_comment

    c = {"id": "ab12cd-1f", "user": "u1", "nick": nick, "text": text, "ts": ts, "role": "viewer"}
    expected = json.dumps(c, separators=(",", ":"), ensure_ascii=False)
    assert _dumps_comment(c) == expected
    assert _dumps_comment({**c, "nick": "\ud800" + nick}) == json.dumps(
        {**c, "nick": "\ud800" + nick}, separators=(",", ":"), ensure_ascii=False
    )
