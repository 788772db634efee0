"""Run pins in Postgres (migration 0004): per execution, run user and key, the secret and version
its first resolve used. Ids and versions only, never a value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.domain.limits import PIN_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class PinRow:
    key: str
    scope: int
    secret_id: int
    version: int
    pinned_at: datetime


# Pins what is not pinned yet and returns, for every key asked, the pin that holds: an existing
# unexpired pin wins over the one proposed (also one another replica made a moment before: the
# conflict branch keeps its values); an expired one is replaced. One round trip.
_PIN_SQL = """
WITH asked AS (
    SELECT * FROM unnest($4::text[], $5::smallint[], $6::bigint[], $7::bigint[]) AS t(key, scope, secret_id, version)
), existing AS (
    SELECT p.key, p.scope, p.secret_id, p.version, p.pinned_at FROM run_pins p
     WHERE p.workspace_id = $1 AND p.execution_id = $2 AND p.run_user_id = $3 AND p.key = ANY($4::text[])
       AND p.pinned_at > now() - make_interval(secs => $8)
), pinned AS (
    INSERT INTO run_pins AS p (workspace_id, execution_id, run_user_id, key, scope, secret_id, version)
    SELECT $1, $2, $3, a.key, a.scope, a.secret_id, a.version FROM asked a
     WHERE a.key NOT IN (SELECT key FROM existing)
    ON CONFLICT (workspace_id, execution_id, run_user_id, key) DO UPDATE SET
        scope = CASE WHEN p.pinned_at > now() - make_interval(secs => $8) THEN p.scope ELSE excluded.scope END,
        secret_id = CASE WHEN p.pinned_at > now() - make_interval(secs => $8)
                         THEN p.secret_id ELSE excluded.secret_id END,
        version = CASE WHEN p.pinned_at > now() - make_interval(secs => $8)
                       THEN p.version ELSE excluded.version END,
        pinned_at = CASE WHEN p.pinned_at > now() - make_interval(secs => $8)
                         THEN p.pinned_at ELSE now() END
    RETURNING p.key, p.scope, p.secret_id, p.version, p.pinned_at
)
SELECT * FROM existing UNION ALL SELECT * FROM pinned
"""


async def pin(
    conn: asyncpg.Connection,
    workspace_id: str,
    execution_id: str,
    run_user_id: str,
    proposed: Sequence[tuple[str, int, int, int]],
) -> list[PinRow]:
    """The pins of these keys for the run, pinning (key, scope, secret id, version) where none holds."""
    rows = await conn.fetch(
        _PIN_SQL,
        workspace_id,
        execution_id,
        run_user_id,
        [p[0] for p in proposed],
        [p[1] for p in proposed],
        [p[2] for p in proposed],
        [p[3] for p in proposed],
        float(PIN_TTL_SECONDS),
    )
    return [PinRow(r["key"], r["scope"], r["secret_id"], r["version"], r["pinned_at"]) for r in rows]


async def kept_versions(conn: asyncpg.Connection, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The sealed bytes of these (secret id, version)s that are still kept."""
    rows = await conn.fetch(
        "SELECT v.secret_id, v.version, v.sealed FROM secret_versions v"
        " JOIN unnest($1::bigint[], $2::bigint[]) AS t(secret_id, version)"
        " ON v.secret_id = t.secret_id AND v.version = t.version",
        [w[0] for w in wanted],
        [w[1] for w in wanted],
    )
    return {(r["secret_id"], r["version"]): r["sealed"] for r in rows}


async def end_execution(conn: asyncpg.Connection, workspace_id: str, execution_id: str) -> int:
    """Deletes every pin of an execution (EndRun); returns how many."""
    status = await conn.execute(
        "DELETE FROM run_pins WHERE workspace_id = $1 AND execution_id = $2", workspace_id, execution_id
    )
    return int(status.split()[-1])


async def prune_expired(conn: asyncpg.Connection, limit: int = 1000) -> int:
    """Deletes up to `limit` pins that no longer hold."""
    status = await conn.execute(
        "DELETE FROM run_pins WHERE ctid = ANY(ARRAY(SELECT ctid FROM run_pins"
        " WHERE pinned_at <= now() - make_interval(secs => $2) LIMIT $1))",
        limit,
        float(PIN_TTL_SECONDS),
    )
    return int(status.split()[-1])
