"""Audit retention (issue 10 item 5): events older than SECRETS_AUDIT_RETENTION_DAYS are deleted
in bounded batches, one replica at a time, while writers keep writing.

The tests prune with a retention of 30 days, events of 60 days and more: the session's server
prunes at its default of 400 days in the background, and so never takes these tests' rows."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.app.retention import AuditRetention
from service.config import ConfigError, Settings
from service.store import repository as repo
from service.store.audit_log import RETENTION_LOCK_ID
from tests.api import uid
from tests.conftest import Server


async def insert_events(conn: asyncpg.Connection, workspace_id: str, at: datetime, count: int) -> None:
    """Old events written straight into the table with COPY, as a long-running deployment has them."""
    await conn.copy_records_to_table(
        "audit_events",
        columns=["principal", "workspace_id", "action", "keys", "outcome", "at"],
        records=[
            (
                "retention-test",
                workspace_id,
                "inputs.resolve",
                json.dumps([{"key": "K", "scope": 1, "version": 1}]),
                "ok",
                at - timedelta(seconds=i),
            )
            for i in range(count)
        ],
    )


async def count(conn: asyncpg.Connection, workspace_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM audit_events WHERE workspace_id = $1", workspace_id))


async def test_old_events_go_in_batches_and_recent_ones_stay(server: Server) -> None:
    url = server.settings.database_url or ""
    ws = uid("ws")
    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        await insert_events(conn, ws, now - timedelta(days=60), 12_000)
        await insert_events(conn, ws, now - timedelta(days=30, minutes=-10), 300)  # minutes inside
        await insert_events(conn, ws, now, 50)
        retention = AuditRetention(url, 30, batch_rows=5000, pause_s=0.01, first_delay_s=0)
        pruned = await retention.prune(now)
        assert pruned is not None
        assert (pruned.deleted, pruned.batches) == (12_000, 3)
        assert await count(conn, ws) == 350
        oldest = await conn.fetchval("SELECT min(at) FROM audit_events")
        assert oldest >= now - timedelta(days=30)
        again = await retention.prune(now)
        assert again is not None and again.deleted == 0
    finally:
        await conn.close()


async def test_one_replica_at_a_time(server: Server) -> None:
    url = server.settings.database_url or ""
    ws = uid("ws")
    holder = await asyncpg.connect(url)
    try:
        await insert_events(holder, ws, datetime.now(UTC) - timedelta(days=60), 10)
        # Another replica is pruning: this one skips the round, deleting nothing, waiting for nothing.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID)
        retention = AuditRetention(url, 30, first_delay_s=0)
        started = time.monotonic()
        assert await retention.prune() is None
        assert time.monotonic() - started < 2
        assert await count(holder, ws) == 10
        await holder.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_ID)
        pruned = await retention.prune()
        assert pruned is not None and pruned.deleted >= 10 and await count(holder, ws) == 0
        # The lock went with the pruning connection: it can be taken again at once.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID)
        await holder.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_ID)
    finally:
        await holder.close()


async def test_writers_are_not_blocked_while_old_events_are_deleted(server: Server) -> None:
    url = server.settings.database_url or ""
    ws, live = uid("ws"), uid("ws")
    conn = await asyncpg.connect(url)
    writer = await asyncpg.connect(url)
    try:
        await insert_events(conn, ws, datetime.now(UTC) - timedelta(days=60), 60_000)
        retention = AuditRetention(url, 30, batch_rows=5000, pause_s=0.02, first_delay_s=0)
        latencies: list[float] = []
        done = asyncio.Event()

        async def write() -> None:
            # As the service writes: single inserts (changes) and COPY batches (resolves).
            while not done.is_set():
                started = time.monotonic()
                await repo.insert_audit(writer, repo.AuditRecord("w", "secrets.save", "ok", workspace_id=live))
                await repo.insert_audit_many(
                    writer, [repo.AuditRecord("w", "inputs.resolve", "ok", workspace_id=live)] * 50
                )
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.005)

        writing = asyncio.create_task(write())
        pruned = await retention.prune()
        done.set()
        await writing
        assert pruned is not None and pruned.deleted >= 60_000 and pruned.batches >= 12
        assert await count(conn, ws) == 0
        assert await count(conn, live) == 51 * len(latencies)
        latencies.sort()
        worst = latencies[-1]
        print(
            f"\nretention: {pruned.deleted:,} rows in {pruned.batches} batches, {pruned.seconds:.2f} s; "
            f"{len(latencies)} writes meanwhile, median {1000 * latencies[len(latencies) // 2]:.1f} ms, "
            f"worst {1000 * worst:.1f} ms"
        )
        assert worst < 1.0, "a writer waited for the deletes"
    finally:
        await writer.close()
        await conn.close()


def test_the_setting() -> None:
    assert Settings.from_env({}).audit_retention_days == 400
    assert Settings.from_env({"SECRETS_AUDIT_RETENTION_DAYS": "30"}).audit_retention_days == 30
    assert Settings.from_env({"SECRETS_AUDIT_RETENTION_DAYS": "0"}).audit_retention_days == 0
    for bad in ("-1", "forever", "1.5", "100001"):
        with pytest.raises(ConfigError, match="SECRETS_AUDIT_RETENTION_DAYS"):
            Settings.from_env({"SECRETS_AUDIT_RETENTION_DAYS": bad})


async def test_the_server_runs_it(server: Server) -> None:
    assert "audit-retention" in [t.get_name() for t in server.running._tasks]
