"""`python -m bench.audit_retention`: what audit retention costs, measured three ways.

On a fresh database with the service's schema (every migration), it fills audit_events with OLD
events past the retention and RECENT ones within it, then removes the old ones while a writer
keeps writing as the service does (one INSERT, as a change does, and a COPY of 50 events, as the
resolve buffer does, every 5 ms), and reports the removal's time and the writer's latency:

1. batched deletes, as service/app/retention.py runs them: DELETE of the 5,000 oldest, committed
   one by one, with a 0.1 s pause between batches;
2. one DELETE of every old event, in one transaction;
3. time partitions: the same rows in a table partitioned by month, the old months detached
   (DETACH PARTITION ... CONCURRENTLY) and dropped.

It also measures what the indexes of migration 0006 (ListAuditEvents' filters) cost the writes:
COPY of resolve-like events with and without them.

Environment: AUDIT_BENCH_OLD (default 500,000), AUDIT_BENCH_RECENT (100,000),
SECRETS_BENCH_DATABASE_URL (a Postgres admin URL; default: an embedded Postgres).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.__main__ import Postgres
from bench.progress import Progress
from service.store import repository as repo
from service.store.audit_log import START, delete_older_than
from service.store.migrations import migrate

OLD = int(os.environ.get("AUDIT_BENCH_OLD", "500000"))
RECENT = int(os.environ.get("AUDIT_BENCH_RECENT", "100000"))
DAYS = 400
COLUMNS = ["principal", "user_id", "workspace_id", "action", "keys", "execution_id", "outcome", "workflow_id", "at"]
NEW_INDEXES = (
    "audit_events_user_time",
    "audit_events_action_time",
    "audit_events_keys",
    "audit_events_failed_keys",
)


def rows(count: int, newest: datetime, span: timedelta) -> list[tuple[Any, ...]]:
    """Resolve-like events spread evenly over `span` before `newest`."""
    step = span / max(count, 1)
    keys = json.dumps([{"key": f"KEY_{i}", "scope": 1, "version": 3} for i in range(3)])
    return [
        (
            "executor",
            f"user-{i % 500}",
            f"ws-{i % 50}",
            "inputs.resolve",
            keys,
            f"exec-{i}",
            "ok",
            f"wf-{i % 200}",
            newest - step * i,
        )
        for i in range(count)
    ]


async def fill(conn: asyncpg.Connection, table: str, label: str) -> None:
    now = datetime.now(UTC)
    progress = Progress(f"{label}: filling", OLD + RECENT, "events")
    done = 0
    for newest, span, count in (
        (now - timedelta(days=DAYS + 1), timedelta(days=300), OLD),
        (now, timedelta(days=DAYS - 1), RECENT),
    ):
        batch = rows(count, newest, span)
        for start in range(0, count, 20_000):
            await conn.copy_records_to_table(table, columns=COLUMNS, records=batch[start : start + 20_000])
            done += len(batch[start : start + 20_000])
            progress.update(done)
    progress.finish(done)
    await conn.execute(f"VACUUM ANALYZE {table}")


async def with_writer(url: str, table: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Runs `work` while a writer writes into `table`; its figures plus the writer's latencies."""
    writer = await asyncpg.connect(url)
    latencies: list[float] = []
    done = asyncio.Event()

    async def write() -> None:
        event = repo.AuditRecord("bench", "inputs.resolve", "ok", workspace_id="ws-live", at=datetime.now(UTC))
        while not done.is_set():
            started = time.perf_counter()
            async with writer.transaction():
                await writer.execute(
                    f"INSERT INTO {table} (principal, workspace_id, action, outcome) VALUES ('bench', 'ws-live', 'secrets.save', 'ok')"  # noqa: S608
                )
            if table == "audit_events":
                await repo.insert_audit_many(writer, [event] * 50)
            else:
                await writer.copy_records_to_table(
                    table,
                    columns=["principal", "workspace_id", "action", "outcome", "at"],
                    records=[("bench", "ws-live", "inputs.resolve", "ok", datetime.now(UTC))] * 50,
                )
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(write())
    try:
        figures = await work()
    finally:
        done.set()
        await task
        await writer.close()
    latencies.sort()
    figures["writes"] = len(latencies)
    figures["write_p50_ms"] = 1000 * latencies[len(latencies) // 2]
    figures["write_p99_ms"] = 1000 * latencies[int(len(latencies) * 0.99)]
    figures["write_max_ms"] = 1000 * latencies[-1]
    return figures


async def batched(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await fill(conn, "audit_events", "batched")
        cutoff = datetime.now(UTC) - timedelta(days=DAYS)

        async def work() -> dict[str, Any]:
            started = time.perf_counter()
            times: list[float] = []
            deleted = 0
            after = START
            while True:
                t = time.perf_counter()
                n, after = await delete_older_than(conn, cutoff, 5000, after)
                times.append(time.perf_counter() - t)
                deleted += n
                if n < 5000:
                    break
                await asyncio.sleep(0.1)
            total = time.perf_counter() - started
            return {
                "deleted": deleted,
                "seconds": total,
                "seconds_without_pauses": sum(times),
                "batches": len(times),
                "batch_p50_ms": 1000 * statistics.median(times),
                "batch_max_ms": 1000 * max(times),
            }

        return await with_writer(url, "audit_events", work)
    finally:
        await conn.close()


async def one_delete(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await fill(conn, "audit_events", "one DELETE")
        cutoff = datetime.now(UTC) - timedelta(days=DAYS)

        async def work() -> dict[str, Any]:
            started = time.perf_counter()
            status = await conn.execute("DELETE FROM audit_events WHERE at < $1", cutoff, timeout=3600)
            return {"deleted": int(status.split()[-1]), "seconds": time.perf_counter() - started}

        return await with_writer(url, "audit_events", work)
    finally:
        await conn.close()


async def partitions(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            CREATE TABLE audit_p (LIKE audit_events INCLUDING DEFAULTS) PARTITION BY RANGE (at);
            ALTER TABLE audit_p ALTER COLUMN id SET DEFAULT nextval('audit_events_id_seq');
            ALTER TABLE audit_p ADD PRIMARY KEY (id, at);
            CREATE INDEX ON audit_p (at DESC, id DESC);
            CREATE INDEX ON audit_p (workspace_id, at DESC, id DESC);
            CREATE INDEX ON audit_p (user_id, at DESC, id DESC);
            CREATE INDEX ON audit_p (principal, at DESC, id DESC);
            CREATE INDEX ON audit_p (action, at DESC, id DESC);
            CREATE INDEX ON audit_p USING gin (keys jsonb_path_ops);
            CREATE INDEX ON audit_p USING gin (failed_keys jsonb_path_ops);
            """
        )
        now = datetime.now(UTC)
        first = (now - timedelta(days=DAYS + 320)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        months: list[tuple[str, datetime, datetime]] = []
        start = first
        while start < now + timedelta(days=31):
            end = (start + timedelta(days=32)).replace(day=1)
            name = f"audit_p_{start:%Y_%m}"
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF audit_p FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            months.append((name, start, end))
            start = end
        await fill(conn, "audit_p", "partitions")
        cutoff = now - timedelta(days=DAYS)

        async def work() -> dict[str, Any]:
            started = time.perf_counter()
            dropped = 0
            for name, _, end in months:
                # Only whole months past the retention go: a partition's events leave together.
                if end <= cutoff:
                    dropped += int(await conn.fetchval(f"SELECT count(*) FROM {name}"))  # noqa: S608
                    await conn.execute(f"ALTER TABLE audit_p DETACH PARTITION {name} CONCURRENTLY")
                    await conn.execute(f"DROP TABLE {name}")
            return {
                "deleted": dropped,
                "seconds": time.perf_counter() - started,
                "kept_past_retention": int(await conn.fetchval("SELECT count(*) FROM audit_p WHERE at < $1", cutoff)),
            }

        return await with_writer(url, "audit_p", work)
    finally:
        await conn.close()


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds a (local) Postgres backend has used; None when it is not on this machine. What
    a write costs the database, whatever else the machine is doing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def index_cost(url: str) -> dict[str, Any]:
    """What COPY of resolve-like events costs the database with migration 0006's indexes and
    without them: backend CPU per event (wall time when the server is not local), the median of
    three rounds of 100,000 events each."""
    conn = await asyncpg.connect(url)
    figures: dict[str, Any] = {}
    try:
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        definitions = {
            r["indexname"]: r["indexdef"]
            for r in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY($1::text[])", list(NEW_INDEXES)
            )
        }
        batch = rows(5000, datetime.now(UTC), timedelta(hours=1))
        costs: dict[str, list[float]] = {"with_0006_indexes": [], "without_0006_indexes": []}
        for _ in range(3):
            for label in costs:
                await conn.execute("TRUNCATE audit_events")
                for name, definition in definitions.items():
                    await conn.execute(f"DROP INDEX IF EXISTS {name}")
                    if label == "with_0006_indexes":
                        await conn.execute(definition)
                await conn.copy_records_to_table("audit_events", columns=COLUMNS, records=batch)  # warm
                cpu, wall = _backend_cpu(pid), time.perf_counter()
                for _ in range(20):
                    await conn.copy_records_to_table("audit_events", columns=COLUMNS, records=batch)
                after = _backend_cpu(pid)
                spent = after - cpu if after is not None and cpu is not None else time.perf_counter() - wall
                costs[label].append(spent / 100_000)
        for label, each in costs.items():
            figures[label + "_us_per_event"] = 1e6 * statistics.median(each)
        figures["measured"] = "backend CPU" if _backend_cpu(pid) is not None else "wall time"
        return figures
    finally:
        await conn.close()


async def fresh(pg: Postgres) -> str:
    url = await pg.fresh_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


async def main() -> None:
    random.seed(1)
    pg = Postgres()
    try:
        results = {
            "index_cost": await index_cost(await fresh(pg)),
            "batched_deletes": await batched(await fresh(pg)),
            "one_delete": await one_delete(await fresh(pg)),
            "partitions": await partitions(await fresh(pg)),
        }
        print(f"\naudit retention on {pg.kind}: {OLD:,} events past {DAYS} days, {RECENT:,} within")
        for name, figures in results.items():
            print(f"  {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items()))
    finally:
        await pg.drop_created()
        pg.close()


if __name__ == "__main__":
    asyncio.run(main())
