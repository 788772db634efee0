"""A real Postgres for tests: the embedded one (pgserver) by default, or the server named by
SECRETS_TEST_DATABASE_URL (for example the machine's own, postgresql://postgres@127.0.0.1:5432/postgres).

Either way each test session gets a database of its own, created here and dropped at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the admin URL of a running Postgres."""
    given = os.environ.get("SECRETS_TEST_DATABASE_URL")
    if given:
        yield given
        return
    import pgserver

    # Short path: Postgres puts its Unix socket in the data dir, and socket paths are limited to
    # about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="sst-pg-"))
    server = pgserver.get_server(root / "pg", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def fresh_database_name() -> str:
    return "secrets_test_" + uuid.uuid4().hex[:10]


async def create_database(admin_url: str) -> str:
    name = fresh_database_name()
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    return _with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
