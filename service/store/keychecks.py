"""SQL for master key check values (table `master_key_checks`, migration 0002)."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg


async def check_values(conn: asyncpg.Connection) -> dict[str, bytes]:
    rows = await conn.fetch("SELECT key_id, check_value FROM master_key_checks")
    return {r["key_id"]: bytes(r["check_value"]) for r in rows}


async def record_check_values(conn: asyncpg.Connection, values: Mapping[str, bytes]) -> None:
    """Records check values for key ids that have none yet; a recorded value is never replaced."""
    if values:
        await conn.execute(
            "INSERT INTO master_key_checks (key_id, check_value)"
            " SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (key_id) DO NOTHING",
            list(values),
            list(values.values()),
        )
