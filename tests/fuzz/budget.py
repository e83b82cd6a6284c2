"""How many cases each fuzz test runs: a CI number per test, or every test the number in
``BERRYLIVE_FUZZ_EXAMPLES`` for a longer run, e.g.

    BERRYLIVE_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q tests/fuzz -p no:cacheprovider

(RELIABILITY.md lists the CI numbers and the last long run.)"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

ENV = "BERRYLIVE_FUZZ_EXAMPLES"


def examples(ci: int) -> int:
    raw = os.environ.get(ENV, "")
    return int(raw) if raw.strip() else ci


def fuzz(ci: int) -> settings:
    """Settings of a fuzz test that runs ``ci`` cases in CI."""
    return settings(
        max_examples=examples(ci),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,  # the same cases every CI run; a long run explores afresh
        derandomize=not os.environ.get(ENV),
    )
