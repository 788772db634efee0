"""Shared fixtures: a real Postgres, and a real server on port 0 with known principals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import settings

from service.auth import hash_token
from service.config import Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.server import Running, start
from tests import pg

# Property tests: no per-example deadline (shared CI machines stall), and under CI a fixed
# seed sequence, so that the gate is repeatable; locally each run explores new inputs.
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TOKENS = {
    "editor": "test-editor-token",
    "executor": "test-executor-token",
    "directory": "test-directory-token",
    "ops": "test-ops-token",
    "all": "test-all-roles-token",
}


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with pg.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    url = await pg.create_database(pg_admin_url)
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture
async def fresh_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A database of one test's own, for a test whose servers use a keyring of their own: a
    database remembers the master keys its data keys need, and refuses a server without them."""
    url = await pg.create_database(pg_admin_url)
    yield url
    await pg.drop_database(pg_admin_url, url)


def write_principals(path: Path) -> Path:
    roles = {
        "editor": ["editor"],
        "executor": ["executor"],
        "directory": ["directory"],
        "ops": ["ops"],
        "all": ["editor", "executor", "directory", "ops"],
    }
    write_private_json(
        path,
        {
            "principals": [
                {"name": f"test-{name}", "roles": roles[name], "token_sha256": hash_token(token)}
                for name, token in TOKENS.items()
            ]
        },
    )
    return path


@pytest.fixture(scope="session")
def secrets_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("secrets")
    keyring = root / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    return root, keyring, write_principals(root / "principals.json")


@dataclass
class Server:
    running: Running
    address: str
    settings: Settings


@pytest.fixture(scope="session")
async def server(database_url: str, secrets_files: tuple[Path, Path, Path]) -> AsyncIterator[Server]:
    root, keyring, principals = secrets_files
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=root / "data",
        keyring_file=keyring,
        principals_file=principals,
        log_level="DEBUG",
    )
    running = await start(settings)
    yield Server(running, f"127.0.0.1:{running.port}", settings)
    await running.stop(grace=1)


@pytest.fixture(scope="session")
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(autouse=True, scope="session")
def _debug_logging() -> None:
    # The most verbose level, so that tests that look for leaks in logs see everything.
    logging.getLogger().setLevel(logging.DEBUG)


def metadata(role: str = "editor", user: str | None = None) -> list[tuple[str, str]]:
    md = [("authorization", f"Bearer {TOKENS[role]}")]
    if user is not None:
        md.append(("x-user-id", user))
    return md


def keyring_json(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text()))


@pytest.fixture(autouse=True)
async def _no_unhandled_loop_exceptions() -> AsyncIterator[None]:
    """Fails a test during which the event loop saw an exception nobody handled (a task that
    died unobserved, a callback that raised), as asyncpg's own test base does."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not seen, f"unhandled exceptions in the event loop: {[c.get('message') for c in seen]}"
