"""Run grants in Postgres (migration 0003): ids and metadata only, never a token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: str
    workspace_id: str
    workflow_id: str
    execution_id: str
    run_user_id: str
    issued_by: str
    expires_at: datetime


async def lock_execution(conn: asyncpg.Connection, workspace_id: str, execution_id: str) -> None:
    """Serializes issuing and ending for one execution (transaction-scoped), so that no grant is
    issued for a run that is ending at the same moment."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 14))", f"run-grant\x1f{workspace_id}\x1f{execution_id}"
    )


async def execution_ended(conn: asyncpg.Connection, workspace_id: str, execution_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM run_ends WHERE workspace_id = $1 AND execution_id = $2", workspace_id, execution_id
    )
    return found is not None


async def insert_grant(conn: asyncpg.Connection, row: GrantRow) -> None:
    await conn.execute(
        "INSERT INTO run_grants (id, workspace_id, workflow_id, execution_id, run_user_id, issued_by, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        row.id,
        row.workspace_id,
        row.workflow_id,
        row.execution_id,
        row.run_user_id,
        row.issued_by,
        row.expires_at,
    )


async def revoke_grant(conn: asyncpg.Connection, workspace_id: str, grant_id: str) -> tuple[bool, datetime] | None:
    """Marks a grant of the workspace revoked. None when there is no such grant; else whether
    this call stopped it (False: it was already revoked or ended) and when it expires."""
    row = await conn.fetchrow(
        "SELECT expires_at, revoked_at IS NULL AND ended_at IS NULL AS live FROM run_grants"
        " WHERE id = $1 AND workspace_id = $2 FOR UPDATE",
        grant_id,
        workspace_id,
    )
    if row is None:
        return None
    if row["live"]:
        await conn.execute("UPDATE run_grants SET revoked_at = now() WHERE id = $1", grant_id)
    return bool(row["live"]), row["expires_at"]


async def end_execution(
    conn: asyncpg.Connection, workspace_id: str, execution_id: str, ended_by: str
) -> list[tuple[str, datetime]]:
    """Records the end of an execution and ends its live grants; returns their (id, expires_at)."""
    await conn.execute(
        "INSERT INTO run_ends (workspace_id, execution_id, ended_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        workspace_id,
        execution_id,
        ended_by,
    )
    rows = await conn.fetch(
        "UPDATE run_grants SET ended_at = now()"
        " WHERE workspace_id = $1 AND execution_id = $2 AND revoked_at IS NULL AND ended_at IS NULL"
        " RETURNING id, expires_at",
        workspace_id,
        execution_id,
    )
    return [(r["id"], r["expires_at"]) for r in rows]


async def stopped_grants(conn: asyncpg.Connection) -> list[tuple[str, datetime]]:
    """Every revoked or ended grant that has not expired yet: (id, expires_at)."""
    rows = await conn.fetch(
        "SELECT id, expires_at FROM run_grants"
        " WHERE (revoked_at IS NOT NULL OR ended_at IS NOT NULL) AND expires_at > now()"
    )
    return [(r["id"], r["expires_at"]) for r in rows]


async def grant_live(conn: asyncpg.Connection, grant_id: str) -> bool:
    """Whether the grant exists and was neither revoked nor ended (its expiry is the token's)."""
    found = await conn.fetchval(
        "SELECT revoked_at IS NULL AND ended_at IS NULL FROM run_grants WHERE id = $1", grant_id
    )
    return bool(found)


async def purge_expired(conn: asyncpg.Connection, before: datetime) -> None:
    """Forgets grants that expired before `before`, and ended runs none of whose grants can
    still be alive (ended before `before`, which is at least the longest grant ago)."""
    await conn.execute("DELETE FROM run_grants WHERE expires_at < $1", before)
    await conn.execute("DELETE FROM run_ends WHERE ended_at < $1", before)
