"""F10: the health watcher could die.

`Database.ping` caught only connection errors, so any other database error (a database that
refuses connections: "database does not exist", an authentication failure, "not currently
accepting connections") ended the watcher for good: health then stayed where it was through
later outages and recoveries, and SIGTERM exited 1 with tracebacks.

Now the watcher survives every exception, health is split into liveness (service name "",
SERVING while the process is alive) and readiness (each secrets.v1.* name: NOT_SERVING while the
database cannot be reached or the keyring cannot open the data keys in use, SPEC 3.6), and
SIGTERM exits 0 whatever the database did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.server import SERVICE_NAMES, Running, start
from service.store.pool import Database
from tests import pg
from tests.conftest import write_principals
from tests.proc import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _RefusingPool:
    """A pool whose every connection attempt fails the way a database that refuses us fails."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def acquire(self, timeout: float | None = None) -> Any:
        exc = self.exc

        class Acquire:
            async def __aenter__(self) -> Any:
                raise exc

            async def __aexit__(self, *args: object) -> None:
                return None

        return Acquire()


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.InvalidCatalogNameError('database "gone" does not exist'),
        asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "secrets"'),
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError('database "x" is not currently accepting connections'),
        RuntimeError("anything at all"),
    ],
    ids=["no such database", "bad password", "not accepting connections", "RuntimeError"],
)
async def test_ping_says_not_reachable_for_any_database_error(exc: BaseException) -> None:
    db = Database(_RefusingPool(exc), "postgresql://unused")  # type: ignore[arg-type]
    assert await db.ping(timeout=0.5) is False


# --- the running server ----------------------------------------------------------------------------


@pytest.fixture
async def own_database(pg_admin_url: str) -> AsyncIterator[str]:
    url = await pg.create_database(pg_admin_url)
    yield url
    await _allow_connections(pg_admin_url, url, True)
    await pg.drop_database(pg_admin_url, url)


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def _allow_connections(admin_url: str, url: str, allow: bool) -> None:
    """ALLOW_CONNECTIONS false, and every session on it ended: from then on the database answers
    every connection attempt with an error that is not a connection error (SQLSTATE 55000)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'ALTER DATABASE "{_name(url)}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                _name(url),
            )
    finally:
        await conn.close()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    return keyring, write_principals(tmp_path / "principals.json")


@pytest.fixture
async def running(own_database: str, tmp_path: Path) -> AsyncIterator[Running]:
    keyring, principals = _files(tmp_path)
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=own_database,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=principals,
        )
    )
    yield running
    await running.stop(grace=1)


async def _statuses(address: str) -> dict[str, int]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return {
            name: (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)).status
            for name in ("", *SERVICE_NAMES)
        }


async def _wait_for(address: str, ready: int, within: float) -> dict[str, int]:
    """Waits until every secrets.v1.* name says `ready`; "" (liveness) must say SERVING throughout."""
    began = time.monotonic()
    while True:
        seen = await _statuses(address)
        assert seen[""] == SERVING, f"liveness is {seen['']}: the process is alive"
        if all(seen[name] == ready for name in SERVICE_NAMES):
            return seen
        if time.monotonic() - began > within:
            raise AssertionError(f"readiness did not become {ready} within {within}s: {seen}")
        await asyncio.sleep(0.1)


def _watcher(running: Running) -> asyncio.Task[Any]:
    (task,) = [t for t in running._tasks if t.get_name() == "health-watch"]
    return task


async def test_a_database_that_refuses_connections_is_not_ready_and_recovery_is_seen(
    running: Running, own_database: str, pg_admin_url: str
) -> None:
    address = f"127.0.0.1:{running.port}"
    await _wait_for(address, SERVING, within=5)
    await _allow_connections(pg_admin_url, own_database, False)
    await _wait_for(address, NOT_SERVING, within=6)
    await asyncio.sleep(2.5)  # several probes that each get the refusal
    assert not _watcher(running).done(), "the health watcher died"
    await _wait_for(address, NOT_SERVING, within=0)
    await _allow_connections(pg_admin_url, own_database, True)
    await _wait_for(address, SERVING, within=8)


async def test_a_keyring_that_cannot_open_the_data_keys_is_not_ready(running: Running) -> None:
    address = f"127.0.0.1:{running.port}"
    await _wait_for(address, SERVING, within=5)
    running.keys.usable = lambda: False  # type: ignore[method-assign]
    await _wait_for(address, NOT_SERVING, within=4)
    del running.keys.usable  # the class's own answer again
    await _wait_for(address, SERVING, within=4)


async def test_a_readiness_check_that_raises_does_not_end_the_watcher(running: Running) -> None:
    address = f"127.0.0.1:{running.port}"
    await _wait_for(address, SERVING, within=5)

    def broken() -> bool:
        raise ZeroDivisionError("a bug in a readiness check")

    running.keys.usable = broken  # type: ignore[method-assign]
    await _wait_for(address, NOT_SERVING, within=4)
    assert not _watcher(running).done()
    del running.keys.usable
    await _wait_for(address, SERVING, within=4)


@pytest.mark.slow
async def test_sigterm_exits_0_after_the_database_refused_connections(
    own_database: str, pg_admin_url: str, tmp_path: Path
) -> None:
    keyring, principals = _files(tmp_path)
    server = ServerProcess(
        {
            "SECRETS_DATABASE_URL": own_database,
            "SECRETS_KEYRING_FILE": str(keyring),
            "SECRETS_PRINCIPALS_FILE": str(principals),
            "SECRETS_DATA_DIR": str(tmp_path / "d"),
        },
        tmp_path / "server.log",
    )
    try:
        await _wait_for(server.address, SERVING, within=5)
        await _allow_connections(pg_admin_url, own_database, False)
        await _wait_for(server.address, NOT_SERVING, within=6)
        await asyncio.sleep(2.5)
        code = await asyncio.to_thread(server.terminate)
    finally:
        if server.proc.poll() is None:
            with contextlib.suppress(Exception):
                server.kill()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.mark.slow
async def test_sigterm_during_start_up_exits_0(tmp_path: Path) -> None:
    """A database that accepts the connection and never answers holds the start in its connect;
    SIGTERM then cancels the start and the process exits 0 (before, the default handler killed
    it: exit -15)."""
    import os
    import signal
    import subprocess
    import sys

    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    keyring, principals = _files(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_")}
    env.update(
        {
            "SECRETS_LISTEN": "127.0.0.1:0",
            "SECRETS_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/none",
            "SECRETS_KEYRING_FILE": str(keyring),
            "SECRETS_PRINCIPALS_FILE": str(principals),
            "SECRETS_DATA_DIR": str(tmp_path / "d"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await asyncio.wait_for(accepted.wait(), timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        for writer in held:
            writer.close()
        listener.close()
    assert code == 0, output
    assert "Traceback" not in output, output
