"""The TypeScript client (clients/typescript) against real servers: plaintext, TLS and mutual TLS.

`make test` installs the npm packages (`npm ci`) and runs this module when Node.js and npm are
present. It compiles the package (tsc) and runs each of its `node --test` files with the
servers' addresses, the test tokens and the certificates made here in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.config import Settings
from service.server import Running, start
from tests.conftest import TOKENS, Server
from tests.integration.test_tls import make_pki

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(not (NODE and NPM), reason="Node.js and npm are needed for the TypeScript client")


@pytest.fixture(scope="module")
def compiled() -> Path:
    if not (PACKAGE / "node_modules").is_dir():
        pytest.fail("clients/typescript/node_modules is missing: run `make test` (it runs npm ci first)")
    build = subprocess.run(
        [str(PACKAGE / "node_modules" / ".bin" / "tsc"), "-p", str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"tsc failed:\n{build.stdout}{build.stderr}"
    return PACKAGE / "dist" / "test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("ts-pki"))


async def _tls_server(server: Server, pki: dict[str, Path], mutual: bool, data_dir: Path) -> Running:
    # The session server's database, keyring and principals, served over TLS.
    base = server.settings
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=base.database_url,
        data_dir=data_dir,
        keyring_file=base.keyring_file,
        principals_file=base.principals_file,
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca_cert"] if mutual else None,
    )
    return await start(settings)


@pytest.fixture(scope="module")
async def tls_servers(
    server: Server, pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Running, Running]]:
    tls = await _tls_server(server, pki, False, tmp_path_factory.mktemp("tls-data"))
    mtls = await _tls_server(server, pki, True, tmp_path_factory.mktemp("mtls-data"))
    yield tls, mtls
    await tls.stop(grace=1)
    await mtls.stop(grace=1)


async def run_node_tests(test_file: Path, env: dict[str, str]) -> str:
    assert NODE
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "--test",
        "--test-reporter=tap",
        str(test_file),
        cwd=PACKAGE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    counts = dict(re.findall(r"^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$", text, re.MULTILINE))
    assert proc.returncode == 0 and counts.get("fail") == "0", text[-20000:]
    # Nothing may be skipped here: a test that quietly skipped would hide a missing server.
    assert counts.get("skipped") == "0" and int(counts.get("pass", "0")) > 0, text[-20000:]
    return text


async def test_unit_redaction_vectors_and_logger_hooks(compiled: Path) -> None:
    """The redactor against clients/testdata/redaction_vectors.json, console and pino."""
    await run_node_tests(compiled / "redact.test.js", {})


async def test_unit_errors_retries_and_bad_input(compiled: Path) -> None:
    """Typed errors from google.rpc details, retries of UNAVAILABLE only where safe, fail-fast input."""
    await run_node_tests(compiled / "client.test.js", {})


async def test_against_the_real_server(compiled: Path, server: Server) -> None:
    """Resolve (nested inputs, failing blocks, redactor), revision conflict, permission and other
    typed errors, import dry run, every RPC, audit paging, and the shared vectors end to end."""
    await run_node_tests(
        compiled / "server.test.js", {"SECRETS_ADDRESS": server.address, "SECRETS_TOKENS": json.dumps(TOKENS)}
    )


async def test_tls_and_mutual_tls(compiled: Path, tls_servers: tuple[Running, Running], pki: dict[str, Path]) -> None:
    """TLS with the test's CA, mutual TLS with a client certificate; untrusted CA, plaintext,
    and missing or foreign client certificates refused."""
    tls, mtls = tls_servers
    env = {
        "SECRETS_TLS_ADDRESS": f"localhost:{tls.port}",
        "SECRETS_MTLS_ADDRESS": f"localhost:{mtls.port}",
        "SECRETS_TOKENS": json.dumps(TOKENS),
        **{f"SECRETS_PKI_{name.upper()}": str(path) for name, path in pki.items()},
    }
    await run_node_tests(compiled / "tls.test.js", env)
