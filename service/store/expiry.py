"""Expiry of secrets (migration 0005: `secrets.expires_at`). Resolution reads the column with
everything else (repository.RESOLVE_SQL); a secret past it fails its block SECRET_EXPIRED."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def set_expiry(conn: asyncpg.Connection, secret_id: int, expires_at: datetime | None) -> None:
    """Sets (or, with None, clears) when the secret expires."""
    await conn.execute("UPDATE secrets SET expires_at = $2 WHERE id = $1", secret_id, expires_at)
