"""The servers under test, each started fresh on loopback with ports chosen at run time.

* ``berrylive``: ``berrylive serve --host 127.0.0.1 --rtmp-port 0 --http-port 0``; viewers
  use HTTP-FLV.
* ``nginx-rtmp``: Debian's nginx + libnginx-mod-rtmp with a configuration written here
  (one worker process, ``live on``); viewers use RTMP play (nginx-rtmp has no HTTP-FLV).
* ``node-media-server``: the npm package installed under ``bench/peers/`` with a JSON
  configuration written here; viewers use HTTP-FLV.

Each is started in its own working directory (configs, logs, data) and stopped by its
process id (SIGTERM, then SIGKILL after a grace period).
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
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import psutil

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "bench" / "peers"
NMS_APP = PEERS / "node_modules" / "node-media-server" / "bin" / "app.js"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
BERRYLIVE_EXE = REPO / ".venv" / "bin" / "berrylive"
STREAM = "bench"


class ServerError(RuntimeError):
    """A server under test could not be started or lost its stream."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise ServerError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its living descendants."""
    total = 0.0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process we started, SIGKILL it and its descendants after ``grace``."""
    if proc.poll() is not None:
        return
    descendants = process_tree(proc.pid)[1:]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.is_running():
                child.kill()


class Server(ABC):
    """One server under test."""

    name: ClassVar[str]
    viewer_proto: ClassVar[str]

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @classmethod
    @abstractmethod
    def available(cls) -> str | None:
        """None when it can run here, else why not."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def push_url(self, stream: str = STREAM) -> str: ...

    @abstractmethod
    def play_url(self, stream: str = STREAM) -> str: ...

    def command_line(self) -> str:
        return " ".join(self.proc.args) if self.proc is not None else ""  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.name} is not running")
        return self.proc.pid

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    def version(self) -> str:
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Berrylive(Server):
    name = "berrylive"
    viewer_proto = "http-flv"
    _LISTEN = re.compile(r"(rtmp|http) listening on ([0-9.]+):(\d+)")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.data_dir = workdir / "data"
        self.ports: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
        self.env.pop("REDIS_URL", None)
        self.env.pop("DATABASE_URL", None)
        self.env["BERRYLIVE_SECRET"] = "bench-secret-loopback-only"
        self.env["BERRYLIVE_WEBRTC_UDP_PORT"] = "0"  # not 8189: tests or a demo may hold it
        # Every viewer comes from 127.0.0.1: no per-address cap, room for 10 000 viewers.
        self.env.update(BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS_PER_IP="0")
        self.env.update(BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS="12000")

    @classmethod
    def available(cls) -> str | None:
        return (
            None if BERRYLIVE_EXE.exists() else f"{BERRYLIVE_EXE} missing (make test installs it)"
        )

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                str(BERRYLIVE_EXE),
                "serve",
                "--host",
                "127.0.0.1",
                "--rtmp-port",
                "0",
                "--http-port",
                "0",
                "--data-dir",
                str(self.data_dir),
            ],
            env=self.env,
        )
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while len(self.ports) < 2:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"berrylive exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerError(f"berrylive did not log its ports:\n{self.log_tail()}")
            for m in self._LISTEN.finditer(self.log_path.read_text(errors="replace")):
                self.ports[m.group(1)] = int(m.group(3))
            await asyncio.sleep(0.05)
        await wait_port(self.ports["http"], self.proc, 10)

    async def push_url(self, stream: str = STREAM) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(BERRYLIVE_EXE),
            "push-url",
            stream,
            "--data-dir",
            str(self.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await proc.communicate()
        urls = [line for line in out.decode().split() if line.startswith("rtmp://")]
        if proc.returncode != 0 or not urls:
            raise ServerError(f"berrylive push-url failed: {err.decode()[-500:]}")
        # The printed URL names the configured port; the server picked one at run time.
        return re.sub(r"^rtmp://[^/]+", f"rtmp://127.0.0.1:{self.ports['rtmp']}", urls[-1])

    def play_url(self, stream: str = STREAM) -> str:
        return f"http://127.0.0.1:{self.ports['http']}/live/{stream}.flv"

    def version(self) -> str:
        try:
            rev = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            rev = "?"
        return f"berrylive @ {rev}"


NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/error.log warn;

events {{
    worker_connections 16384;
}}

rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            wait_key on;
            wait_video on;
        }}
    }}
}}
"""


class NginxRtmp(Server):
    name = "nginx-rtmp"
    viewer_proto = "rtmp"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.port = 0

    @classmethod
    def available(cls) -> str | None:
        if shutil.which("nginx") is None or not NGINX_RTMP_MODULE.exists():
            return "needs nginx + libnginx-mod-rtmp (apt-get install -y nginx libnginx-mod-rtmp)"
        return None

    async def start(self) -> None:
        self.port = free_port()
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(module=NGINX_RTMP_MODULE, work=self.workdir, port=self.port)
        )
        nginx = shutil.which("nginx") or "nginx"
        self._spawn(
            [nginx, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"), "-c", str(conf)]
        )
        assert self.proc is not None
        await wait_port(self.port, self.proc, 10)

    async def push_url(self, stream: str = STREAM) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def play_url(self, stream: str = STREAM) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def version(self) -> str:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        return out.replace("nginx version: ", "") + " + libnginx-mod-rtmp, 1 worker"


class NodeMediaServer(Server):
    name = "node-media-server"
    viewer_proto = "http-flv"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rtmp_port = 0
        self.http_port = 0

    @classmethod
    def available(cls) -> str | None:
        if shutil.which("node") is None:
            return "needs node"
        if not NMS_APP.exists():
            return "needs `npm install --prefix bench/peers node-media-server`"
        return None

    async def start(self) -> None:
        self.rtmp_port, self.http_port = free_port(), free_port()
        config = {
            "bind": "127.0.0.1",
            "notify": {"url": ""},
            "store": {"path": str(self.workdir / "data")},
            # Secrets set so the server never rewrites this file; auth stays off.
            "auth": {
                "play": False,
                "publish": False,
                "secret": "bench-unused",
                "jwt": {"secret": "bench-unused-" + "0" * 32, "users": []},
            },
            "rtmp": {"port": self.rtmp_port},
            "http": {"port": self.http_port},
            "webadmin": {"enable": False},
            "record": {"auto": False, "path": str(self.workdir / "record")},
        }
        conf = self.workdir / "nms.json"
        conf.write_text(json.dumps(config, indent=2))
        node = shutil.which("node") or "node"
        self._spawn([node, str(NMS_APP), "-c", str(conf), "--no-admin"])
        assert self.proc is not None
        await wait_port(self.http_port, self.proc, 20)
        await wait_port(self.rtmp_port, self.proc, 20)

    async def push_url(self, stream: str = STREAM) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"

    def play_url(self, stream: str = STREAM) -> str:
        return f"http://127.0.0.1:{self.http_port}/live/{stream}.flv"

    def version(self) -> str:
        pkg = json.loads((NMS_APP.parent.parent / "package.json").read_text())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        return f"node-media-server {pkg['version']} (node {node})"


SERVERS: dict[str, type[Server]] = {
    cls.name: cls for cls in (Berrylive, NginxRtmp, NodeMediaServer)
}
