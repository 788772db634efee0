"""Audit retention: events older than SECRETS_AUDIT_RETENTION_DAYS are deleted, in bounded batches.

Every replica runs this loop; one at a time prunes (a session advisory lock, tried and never
waited for: store/audit_log.py `retention_lock`), about once an hour. Each batch is one short
DELETE of at most BATCH_ROWS of the oldest events, committed on its own, with a pause between
batches: no long transaction, no lock on a row that a writer needs (audit rows are only ever
inserted), and WAL and vacuum work spread out. Each batch continues after the last row the one
before deleted and deletes by physical address, so its cost follows the batch, not the table. Why batched deletes and not time partitions is in
the README ("Audit retention"), with the figures of `python -m bench.audit_retention`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.store import audit_log
from service.store.pool import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

# Rows per DELETE: a few tens of milliseconds of work each (README, "Audit retention").
BATCH_ROWS = 5000
# Between batches: leaves the database to the writers and lets replication keep up.
BATCH_PAUSE_S = 0.1
# Between prunes on one replica (each replica tries; the lock lets one through at a time).
INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Pruned:
    deleted: int
    batches: int
    seconds: float


class AuditRetention:
    def __init__(
        self,
        url: str,
        days: int,
        *,
        batch_rows: int = BATCH_ROWS,
        pause_s: float = BATCH_PAUSE_S,
        interval_s: float = INTERVAL_S,
        first_delay_s: float | None = None,
    ) -> None:
        self._url = url
        self.days = days
        self._batch_rows = batch_rows
        self._pause_s = pause_s
        self._interval_s = interval_s
        # Replicas started together should not all try at once: a random first delay.
        self._first_delay_s = random.uniform(30, 300) if first_delay_s is None else first_delay_s

    async def prune(self, now: datetime | None = None) -> Pruned | None:
        """Deletes every event older than the retention, batch by batch; None when another replica
        holds the lock (it is pruning now)."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.days)
        started = time.monotonic()
        deleted = batches = 0
        async with audit_log.retention_lock(self._url) as conn:
            if conn is None:
                return None
            after = audit_log.START
            while True:
                n, after = await audit_log.delete_older_than(conn, cutoff, self._batch_rows, after)
                deleted += n
                batches += 1
                if n < self._batch_rows:
                    break
                await asyncio.sleep(self._pause_s)
        pruned = Pruned(deleted, batches, time.monotonic() - started)
        if deleted:
            log.info(
                "audit retention: %d events older than %d days deleted in %d batches (%.1f s)",
                deleted,
                self.days,
                batches,
                pruned.seconds,
            )
        return pruned

    async def run(self) -> None:
        """Prunes now and then, for as long as the server runs; a failure waits for the next round."""
        await asyncio.sleep(self._first_delay_s)
        while True:
            try:
                await self.prune()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("audit retention skipped: the database is unavailable (%s)", type(exc).__name__)
            except Exception as exc:
                # The type only: a database error's message may quote a row.
                log.error("audit retention failed (%s); it will try again", type(exc).__name__)
            # Jitter, so that replicas drift apart rather than meet at the lock every hour.
            await asyncio.sleep(self._interval_s * random.uniform(0.9, 1.1))
