"""Reading and pruning the audit log: ListAuditEvents' filtered keyset pages, and retention's
bounded deletes. (Events are written by repository.insert_audit and insert_audit_many.)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service.domain.audit_filter import AuditFilter
from service.store.repository import AuditRecord

# The longest span of the events one row stands for (service/app/audit.py MAX_REPEAT_SPAN).
MAX_REPEAT_SPAN_SECONDS = 1


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    record: AuditRecord


def _row(r: asyncpg.Record) -> AuditRow:
    return AuditRow(
        r["id"],
        r["at"],
        AuditRecord(
            principal=r["principal"],
            action=r["action"],
            outcome=r["outcome"],
            user_id=r["user_id"],
            workspace_id=r["workspace_id"],
            keys=tuple((k["key"], int(k["scope"]), int(k["version"])) for k in json.loads(r["keys"])),
            execution_id=r["execution_id"],
            detail=r["detail"],
            workflow_id=r["workflow_id"],
            trigger=int(r["trigger"]),
            failed_keys=tuple((k["key"], int(k["code"])) for k in json.loads(r["failed_keys"])),
            count=int(r["occurrences"]),
            last_at=r["last_at"],
        ),
    )


async def list_events(
    conn: asyncpg.Connection, where: AuditFilter, before: tuple[datetime, int] | None, limit: int
) -> list[AuditRow]:
    """Up to `limit` events matching `where`, newest first by (time, id); `before` (time, id) of the
    last event of the previous page continues after it (keyset paging: events written meanwhile
    never shift the listing). Each filter has an index in that order (migration 0006)."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    conditions = []
    for column in ("workspace_id", "principal", "user_id", "action"):
        value = getattr(where, column)
        if value:
            conditions.append(f"{column} = {arg(value)}")
    if where.action and where.action != "inputs.resolve":
        # True already; said so that the planner may use the index that leaves resolves out.
        conditions.append("action <> 'inputs.resolve'")
    if where.key:
        # Containment, which the GIN indexes answer: the key among those used or those failed
        # (whose index holds only events with a failed key, hence the first test).
        contains = arg(json.dumps([{"key": where.key}]))
        conditions.append(
            f"(keys @> {contains}::jsonb OR (failed_keys <> '[]'::jsonb AND failed_keys @> {contains}::jsonb))"
        )
    if where.start is not None:
        # A row stands for events from `at` to `last_at` (at most MAX_REPEAT_SPAN_SECONDS
        # apart): listed when any of them falls in the range. The first bound keeps the index.
        start = arg(where.start)
        conditions.append(
            f"at >= {start}::timestamptz - interval '{MAX_REPEAT_SPAN_SECONDS} seconds'"
            f" AND coalesce(last_at, at) >= {start}"
        )
    if where.end is not None:
        conditions.append(f"at < {arg(where.end)}")
    if before is not None:
        conditions.append(f"(at, id) < ({arg(before[0])}::timestamptz, {arg(before[1])}::bigint)")
    rows = await conn.fetch(
        "SELECT id, at, principal, user_id, workspace_id, action, keys::text AS keys, execution_id, outcome, detail,"
        " trigger, workflow_id, failed_keys::text AS failed_keys, occurrences, last_at FROM audit_events"
        + (" WHERE " + " AND ".join(conditions) if conditions else "")
        + f" ORDER BY at DESC, id DESC LIMIT {arg(limit)}",
        *args,
    )
    return [_row(r) for r in rows]


# A retention batch. The rows are chosen through the time index, starting after the last row the
# previous batch deleted (so no batch walks again over the index entries its predecessors left
# dead), and deleted by their physical address (a TID scan): the cost follows the batch, never the
# table. (`DELETE ... WHERE id IN (SELECT ...)` was planned as a hash join over a sequential scan
# of the whole table, every batch.) Audit rows are never updated, so an address cannot move
# within the statement.
_DELETE_BATCH = """
WITH gone AS (
    DELETE FROM audit_events
     WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM audit_events
            WHERE at < $1 AND (at, id) > ($2::timestamptz, $3::bigint)
            ORDER BY at, id LIMIT $4))
    RETURNING at, id)
SELECT count(*) OVER () AS deleted, at, id FROM gone ORDER BY at DESC, id DESC LIMIT 1
"""

# Before every event: where the first batch starts.
START = (datetime(1, 1, 1, tzinfo=UTC), 0)


async def delete_older_than(
    conn: asyncpg.Connection, cutoff: datetime, limit: int, after: tuple[datetime, int] = START
) -> tuple[int, tuple[datetime, int]]:
    """Deletes up to `limit` of the oldest events before `cutoff` that come after `after` (the
    (time, id) the previous batch returned); how many it deleted, and where the next batch starts.
    One short statement that locks only the rows it deletes: nothing updates audit rows, and an
    insert takes no lock a delete holds."""
    row = await conn.fetchrow(_DELETE_BATCH, cutoff, after[0], after[1], limit)
    if row is None:
        return 0, after
    return int(row["deleted"]), (row["at"], int(row["id"]))


async def oldest_event_time(conn: asyncpg.Connection) -> datetime | None:
    value = await conn.fetchval("SELECT min(at) FROM audit_events")
    return value if isinstance(value, datetime) else None


# Any constant will do, as long as every replica uses the same one (and it differs from
# migrations.MIGRATION_LOCK_ID): one replica at a time prunes the audit log.
RETENTION_LOCK_ID = 7_351_902_115


@contextlib.asynccontextmanager
async def retention_lock(url: str, timeout: float = 10.0) -> AsyncIterator[asyncpg.Connection | None]:
    """A connection of its own holding the retention lock, or None while another replica holds it.

    A session-level advisory lock on a connection outside the pool: pooled connections keep no
    session state (pool.py), and closing this one releases the lock whatever happens, a crash or
    a cancelled task included. The lock is tried, never waited for."""
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID))
        yield conn if held else None
    finally:
        await conn.close()
