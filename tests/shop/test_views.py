"""Order views: times as ISO-8601 UTC with milliseconds."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from shop_bridge.views import iso as _iso


@given(st.integers(min_value=-(10**12), max_value=4 * 10**12))
def test_iso_matches_the_plain_conversion(ms: int) -> None:
    plain = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
    assert _iso(ms) == plain


def test_iso_of_none_and_a_known_time() -> None:
    assert _iso(None) is None
    assert _iso(1763797000123) == "2025-11-22T07:36:40.123Z"
