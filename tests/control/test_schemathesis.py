"""schemathesis (from PyPI) against /api/openapi.json: no 5xx, no schema violation, no
undocumented status code, in any package's operation.

Runs the ``schemathesis`` CLI in a subprocess against a real server started by the test,
signed in as an operator (an API token), over every operation (positive and negative data).
Operations that would sign the fuzzer itself out (logout, token revocation) are excluded.
Changing an account's password ends all of its tokens, API tokens too, and the fuzzer may
change its own operator's: that operation (``PATCH /api/users/{id}``) is fuzzed in a run of
its own after the others, and the test checks that the first run's token still worked at its
end (else most operations would have answered nothing but 401 and been tested for nothing).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.control.conftest import make_staff

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance"
)
SIGNS_OUT = "update_user"
"""The operationId of ``PATCH /api/users/{id}``: a new password revokes every token."""


def schemathesis_exe() -> str | None:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return str(exe)
    return shutil.which("schemathesis")


async def fuzz(
    exe: str, spec_url: str, headers: list[str], report: Path, name: str, *only: str
) -> None:
    """One schemathesis run (``only``: its operation filters), its output kept in
    ``/tmp/berrylive-<name>.log``: no failure in any operation."""
    proc = await asyncio.create_subprocess_exec(
        exe,
        "run",
        spec_url,
        "--checks",
        CHECKS,
        *(arg for h in headers for arg in ("-H", h)),
        "--exclude-path",
        "/api/auth/logout",
        "--exclude-path",
        "/api/tokens/{id}",
        *only,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "10",
        "--workers",
        "1",
        "--seed",
        "1",
        "--no-color",
        "--request-timeout",
        "10",
        "--report-dir",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode(errors="replace")
    (Path("/tmp") / f"berrylive-{name}.log").write_text(text)
    assert "Test cases:" in text, text[-3000:]  # it ran
    failed = re.findall(r"^_+ ([A-Z]+ /api/\S+) _+$", text, flags=re.M)
    # one document for every package: an undocumented status code, a 5xx or a schema
    # violation in any operation fails here (CHECKS names them)
    assert not failed, text[-8000:]
    assert proc.returncode == 0, text[-6000:]


@pytest.mark.timeout(300)
async def test_openapi_fuzz_finds_no_5xx_no_schema_violation_no_undocumented_status(
    control_env: Any, server_factory: Any, tmp_path: Path
) -> None:
    exe = schemathesis_exe()
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    server = await server_factory(control=control_env)
    spec_url = server.http_url + "/api/openapi.json"
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        shows = [
            await staff.create_broadcast(title=f"show {i}", anchor_id=staff.ids["anchor"])
            for i in range(4)
        ]
        status, created = await staff.api.call(
            "POST", "/api/tokens", staff.operator, json={"name": "schemathesis"}
        )
        assert status == 201
        token = created["token"]
        async with session.get(spec_url) as r:
            assert r.status == 200
            spec = await r.json()
        assert "/api/broadcasts/{id}" in spec["paths"]
        assert spec["paths"]["/api/users/{id}"]["patch"]["operationId"] == SIGNS_OUT
        operator = [f"Authorization: Bearer {token}"]
        everything = ("--exclude-operation-id", SIGNS_OUT)
        await fuzz(exe, spec_url, operator, tmp_path / "all", "schemathesis", *everything)
        status, me = await staff.api.call("GET", "/api/me", token)
        assert status == 200, f"the fuzzer's token stopped working during the run: {me}"
        # a buyer's operations again with a buyer's viewer token (the first run had none:
        # they answered 401 there)
        status, viewer = await staff.api.call(
            "POST",
            f"/api/broadcasts/{shows[0]['id']}/viewer-token",
            staff.operator,
            json={"user_id": "fuzz-buyer", "nick": "fuzz", "ttl": 3600},
        )
        assert status == 200, viewer
        buyer_ops = [
            f"{method.upper()} {path}"
            for path, item in spec["paths"].items()
            for method, op in item.items()
            if any(p.get("name") == "X-Viewer-Token" for p in op.get("parameters", []))
        ]
        assert "POST /api/orders" in buyer_ops, buyer_ops
        await fuzz(
            exe,
            spec_url,
            [f"X-Viewer-Token: {viewer['token']}"],
            tmp_path / "buyer",
            "schemathesis-buyer",
            *(arg for name in buyer_ops for arg in ("--include-name", name)),
        )
        last = ("--include-operation-id", SIGNS_OUT)
        await fuzz(exe, spec_url, operator, tmp_path / "last", "schemathesis-signout", *last)
