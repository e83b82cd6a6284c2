"""Random hex ids from a pooled buffer of ``os.urandom`` bytes.

Every order and every event needs unguessable random bits. ``os.urandom`` is one
``getrandom`` system call per id, which on a busy server (and on virtual machines, where a
system call is dear) shows up per request; drawing the same kernel CSPRNG bytes 4 KiB at a
time makes it one call per few hundred ids.
"""

from __future__ import annotations

import os
import threading

_POOL = 4096


class _RandomPool:
    __slots__ = ("_buf", "_lock", "_pos")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Empty (a new lock too: a forked child must not inherit a held one)."""
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def hex(self, nbytes: int) -> str:
        """``nbytes`` fresh random bytes as hex (each byte is handed out once)."""
        with self._lock:
            pos = self._pos
            if pos + nbytes > len(self._buf):
                self._buf = os.urandom(max(_POOL, nbytes))
                pos = 0
            self._pos = pos + nbytes
            return self._buf[pos : pos + nbytes].hex()


_pool = _RandomPool()
# A forked child starts with an empty pool: parent and child never hand out the same bytes.
os.register_at_fork(after_in_child=lambda: _pool.reset())


def random_hex(nbytes: int) -> str:
    """Random hex string of ``nbytes`` bytes (like ``os.urandom(nbytes).hex()``)."""
    return _pool.hex(nbytes)
