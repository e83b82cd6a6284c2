"""``berrylive user`` / ``token`` commands, run as real subprocesses on a data dir."""

from __future__ import annotations

import os
import subprocess
import sys


def run(tmp_path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERRYLIVE_")}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "control.ops_cli", *args, "--data-dir", str(tmp_path)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_user_add_list_token(tmp_path) -> None:
    r = run(
        tmp_path,
        "user",
        "add",
        "boss",
        "--role",
        "operator",
        "--password-stdin",
        stdin="a long password\n",
    )
    assert r.returncode == 0, r.stderr
    assert "created operator boss" in r.stdout
    r = run(
        tmp_path,
        "user",
        "add",
        "boss",
        "--role",
        "anchor",
        "--password-stdin",
        stdin="another pw!\n",
    )
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run(tmp_path, "user", "add", "x", "--role", "anchor", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "username" in r.stderr
    r = run(tmp_path, "user", "list")
    assert r.returncode == 0 and "boss\toperator" in r.stdout
    r = run(tmp_path, "token", "create", "boss", "--name", "ci")
    assert r.returncode == 0 and r.stdout.startswith("blk_a_")
    r = run(tmp_path, "user", "disable", "boss")
    assert r.returncode == 0
    r = run(tmp_path, "user", "list")
    assert "(disabled)" in r.stdout
