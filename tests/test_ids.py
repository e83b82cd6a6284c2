"""core.ids: pooled random ids are the right size, never repeat, and differ across a fork."""

from __future__ import annotations

import os

from core.ids import random_hex


def test_random_hex_sizes_and_uniqueness() -> None:
    ids = [random_hex(10) for _ in range(5000)]  # several refills of the 4 KiB pool
    assert all(len(i) == 20 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    big = random_hex(5000)  # larger than the pool
    assert len(big) == 10000 and len(set(big)) > 1


def test_forked_child_does_not_reuse_parent_bytes() -> None:
    random_hex(1)  # the parent's pool is filled
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id, exit at once
        os.write(w, random_hex(16).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_hex(16)  # the parent's next id: the same bytes without the reset
