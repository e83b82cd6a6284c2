"""schemathesis (from PyPI) against /api/openapi.json: no 5xx, no schema violation, no
undocumented status code, in any package's operation.

Runs the ``schemathesis`` CLI in a subprocess against a real server started by the test,
signed in as an operator, over every operation (positive and negative data). Operations
that would sign the fuzzer itself out (logout, token revocation) are excluded.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.control.conftest import make_staff

pytestmark = pytest.mark.slow


def schemathesis_exe() -> str | None:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return str(exe)
    return shutil.which("schemathesis")


async def test_openapi_fuzz_finds_no_5xx_no_schema_violation_no_undocumented_status(
    control_env, server_factory, tmp_path
) -> None:
    exe = schemathesis_exe()
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    server = await server_factory(control=control_env)
    async with aiohttp.ClientSession() as session:
        staff = await make_staff(server, session)
        for i in range(4):
            await staff.create_broadcast(title=f"show {i}", anchor_id=staff.ids["anchor"])
        # an API token: the fuzzer may change the operator's password, which ends sessions
        status, created = await staff.api.call(
            "POST", "/api/tokens", staff.operator, json={"name": "schemathesis"}
        )
        assert status == 201
        async with session.get(server.http_url + "/api/openapi.json") as r:
            assert r.status == 200
            spec = await r.json()
        assert "/api/broadcasts/{id}" in spec["paths"]
        report = tmp_path / "report"
        proc = await asyncio.create_subprocess_exec(
            exe,
            "run",
            server.http_url + "/api/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,"
            "content_type_conformance",
            "-H",
            f"Authorization: Bearer {created['token']}",
            "--exclude-path",
            "/api/auth/logout",
            "--exclude-path",
            "/api/tokens/{id}",
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
        out, _ = await asyncio.wait_for(proc.communicate(), 110)
    text = out.decode(errors="replace")
    (Path("/tmp") / "berrylive-schemathesis.log").write_text(text)
    assert "Test cases:" in text, text[-3000:]  # it ran
    failed = re.findall(r"^_+ ([A-Z]+ /api/\S+) _+$", text, flags=re.M)
    # one document for every package: an undocumented status code, a 5xx or a schema
    # violation in any operation fails here (the check list above names them)
    assert not failed, text[-8000:]
    assert proc.returncode == 0, text[-6000:]
