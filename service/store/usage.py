"""Usage of secrets per (secret, workflow) in Postgres (migration 0005): ids, times and counts,
never a value. Written once per resolve audit batch (service/app/usage.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.domain.model import Permission, Scope, SecretRole
from service.domain.usage import USAGE_RETENTION_DAYS, USAGE_WINDOW_DAYS, UsageTally, WorkflowUse

# One round trip per batch: the last use of each (secret, workflow), and its uses per UTC day.
# The tally holds each pair and triple once, sorted, so ON CONFLICT never meets a row twice and
# concurrent writers lock rows in one order.
_RECORD = """
WITH last AS (
    INSERT INTO secret_usage AS u (secret_id, workflow_id, last_used_at, last_execution_id)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[])
    ON CONFLICT (secret_id, workflow_id) DO UPDATE SET
        last_used_at = greatest(u.last_used_at, excluded.last_used_at),
        last_execution_id = CASE WHEN excluded.last_used_at >= u.last_used_at
                                 THEN excluded.last_execution_id ELSE u.last_execution_id END
    RETURNING 1
)
INSERT INTO secret_usage_days AS d (secret_id, workflow_id, day, uses)
SELECT * FROM unnest($5::bigint[], $6::text[], $7::date[], $8::bigint[])
ON CONFLICT (secret_id, workflow_id, day) DO UPDATE SET uses = d.uses + excluded.uses
"""


async def record(conn: asyncpg.Connection, tally: UsageTally) -> None:
    last = tally.last_rows()
    days = tally.day_rows()
    if not last:
        return
    await conn.execute(
        _RECORD,
        [r[0] for r in last],
        [r[1] for r in last],
        [r[2] for r in last],
        [r[3] for r in last],
        [r[0] for r in days],
        [r[1] for r in days],
        [r[2] for r in days],
        [r[3] for r in days],
    )


async def usage_of(conn: asyncpg.Connection, secret_id: int, limit: int) -> list[WorkflowUse]:
    """The workflows that used the secret, most recent first, each with its uses in the last
    USAGE_WINDOW_DAYS UTC days (today included)."""
    rows = await conn.fetch(
        "SELECT u.workflow_id, u.last_used_at, u.last_execution_id, coalesce(sum(d.uses), 0)::bigint AS uses"
        " FROM secret_usage u LEFT JOIN secret_usage_days d"
        " ON d.secret_id = u.secret_id AND d.workflow_id = u.workflow_id"
        " AND d.day > (now() AT TIME ZONE 'UTC')::date - $2::int"
        " WHERE u.secret_id = $1"
        " GROUP BY u.workflow_id, u.last_used_at, u.last_execution_id"
        " ORDER BY u.last_used_at DESC, u.workflow_id LIMIT $3",
        secret_id,
        USAGE_WINDOW_DAYS,
        limit,
    )
    return [WorkflowUse(r["workflow_id"], r["last_used_at"], r["last_execution_id"], int(r["uses"])) for r in rows]


async def last_used(conn: asyncpg.Connection, secret_ids: Sequence[int]) -> dict[int, datetime]:
    """When each of the secrets was last used, by any workflow (absent: not in the last year)."""
    if not secret_ids:
        return {}
    rows = await conn.fetch(
        "SELECT secret_id, max(last_used_at) AS at FROM secret_usage WHERE secret_id = ANY($1::bigint[])"
        " GROUP BY secret_id",
        list(secret_ids),
    )
    return {r["secret_id"]: r["at"] for r in rows}


@dataclass(frozen=True, slots=True)
class RecentUses:
    """The workflows that used one secret in the guard's window: the most recent ones, and how
    many there are in all."""

    uses: list[WorkflowUse]
    workflows: int


async def recent_uses(
    conn: asyncpg.Connection, secret_ids: Sequence[int], window_days: int, listed: int
) -> dict[int, RecentUses]:
    """Per secret, the workflows that used it in the last `window_days` days: the `listed` most
    recent, and the count of all."""
    if not secret_ids or window_days <= 0:
        return {}
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT u.secret_id, u.workflow_id, u.last_used_at, u.last_execution_id,
                   row_number() OVER (PARTITION BY u.secret_id ORDER BY u.last_used_at DESC, u.workflow_id) AS n,
                   count(*) OVER (PARTITION BY u.secret_id) AS workflows
              FROM secret_usage u
             WHERE u.secret_id = ANY($1::bigint[]) AND u.last_used_at > now() - make_interval(days => $2::int)
        ) recent WHERE n <= $3
        ORDER BY secret_id, n
        """,
        list(secret_ids),
        window_days,
        listed,
    )
    found: dict[int, RecentUses] = {}
    for r in rows:
        entry = found.setdefault(r["secret_id"], RecentUses([], int(r["workflows"])))
        entry.uses.append(WorkflowUse(r["workflow_id"], r["last_used_at"], r["last_execution_id"], 0))
    return found


@dataclass(frozen=True, slots=True)
class FallbackRow:
    """A workspace member with a personal secret of a workspace secret's key."""

    secret_id: int
    key: str
    restricted: bool
    permission: Permission
    role: SecretRole | None


async def personal_namesakes(conn: asyncpg.Connection, workspace_secret_ids: Sequence[int]) -> list[FallbackRow]:
    """For each workspace secret, the members of its workspace who have a personal secret of the
    same key, with what decides whether the workspace secret wins for them (user ids stay here:
    the guard reports counts only)."""
    if not workspace_secret_ids:
        return []
    rows = await conn.fetch(
        """
        SELECT w.id, w.key, w.restricted, m.permission, sm.role
          FROM secrets w
          JOIN workspace_members m ON m.workspace_id = w.owner_id
          JOIN secrets p ON p.scope = $3 AND p.owner_id = m.user_id AND p.key = w.key
          LEFT JOIN secret_members sm ON sm.secret_id = w.id AND sm.user_id = m.user_id
         WHERE w.id = ANY($1::bigint[]) AND w.scope = $2
        """,
        list(workspace_secret_ids),
        int(Scope.WORKSPACE),
        int(Scope.PERSONAL),
    )
    return [
        FallbackRow(
            r["id"],
            r["key"],
            r["restricted"],
            Permission(r["permission"]),
            SecretRole(r["role"]) if r["role"] is not None else None,
        )
        for r in rows
    ]


async def forget(conn: asyncpg.Connection, secret_ids: Sequence[int]) -> None:
    """Deletes every usage row of these secrets (purged from the trash)."""
    if secret_ids:
        ids = list(secret_ids)
        await conn.execute("DELETE FROM secret_usage WHERE secret_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM secret_usage_days WHERE secret_id = ANY($1::bigint[])", ids)


def _deleted(status: str) -> int:
    return int(status.split()[-1])


async def prune(conn: asyncpg.Connection, limit: int) -> int:
    """Deletes up to `limit` rows of each kind that no longer count: days before the window,
    pairs unused for USAGE_RETENTION_DAYS, and rows of secrets that are neither stored nor in the
    trash (purged while their usage was on its way). Returns how many went."""
    gone = _deleted(
        await conn.execute(
            "DELETE FROM secret_usage_days WHERE ctid = ANY(ARRAY(SELECT ctid FROM secret_usage_days"
            " WHERE day <= (now() AT TIME ZONE 'UTC')::date - $2::int LIMIT $1))",
            limit,
            USAGE_WINDOW_DAYS,
        )
    )
    gone += _deleted(
        await conn.execute(
            "DELETE FROM secret_usage WHERE ctid = ANY(ARRAY(SELECT ctid FROM secret_usage"
            " WHERE last_used_at < now() - make_interval(days => $2::int) LIMIT $1))",
            limit,
            USAGE_RETENTION_DAYS,
        )
    )
    for table in ("secret_usage", "secret_usage_days"):
        gone += _deleted(
            await conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT u.ctid FROM {table} u"  # noqa: S608
                " WHERE NOT EXISTS (SELECT 1 FROM secrets s WHERE s.id = u.secret_id)"
                " AND NOT EXISTS (SELECT 1 FROM deleted_secrets d WHERE d.id = u.secret_id) LIMIT $1))",
                limit,
            )
        )
    return gone
