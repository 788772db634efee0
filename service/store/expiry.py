"""Expiry of secrets (migration 0005: `secrets.expires_at`). Resolution reads the column with
everything else (repository.RESOLVE_SQL); a secret past it fails its block SECRET_EXPIRED."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

# Postgres keeps these two instants as ordinary times, but asyncpg reads exactly them back as
# -infinity and infinity (naive datetime.min and datetime.max), which nothing above can compare
# with an aware time: an expiry must lie strictly between them.
_READ_AS_MINUS_INFINITY = datetime(1, 1, 1, tzinfo=UTC)
_READ_AS_INFINITY = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
STORABLE_RANGE = "after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z"


def storable(expires_at: datetime) -> bool:
    """Whether `expires_at` (aware) reads back as the time it is."""
    return _READ_AS_MINUS_INFINITY < expires_at < _READ_AS_INFINITY


async def set_expiry(conn: asyncpg.Connection, secret_id: int, expires_at: datetime | None) -> None:
    """Sets (or, with None, clears) when the secret expires."""
    await conn.execute("UPDATE secrets SET expires_at = $2 WHERE id = $1", secret_id, expires_at)
