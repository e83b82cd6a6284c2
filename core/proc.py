"""Child processes (ffmpeg, valkey-server, cluster nodes): stop them politely, then firmly."""

from __future__ import annotations

import asyncio
import signal


async def stop_process(
    proc: asyncio.subprocess.Process, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.returncode is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1
