"""Audit writing for read-only events (resolves).

Changes write their audit row inside their own transaction (see editor.py). A resolve changes
nothing, and writing a row per resolve synchronously would add a round trip and a WAL flush to
the hot path of every workflow block; so resolve events are buffered and written in batches by
one background task, at most `interval` seconds after the resolve. What that costs: a crash can
lose the resolve events of the last interval. Events never carry values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from service.app.context import Caller
from service.store import repository as repo
from service.store.db import UNAVAILABLE_ERRORS, Database

log = logging.getLogger(__name__)


def audit_record(
    caller: Caller,
    workspace_id: str,
    action: str,
    *,
    outcome: str = "ok",
    keys: Sequence[tuple[str, int, int]] = (),
    detail: str = "",
    user_id: str | None = None,
) -> repo.AuditRecord:
    """An audit event by `caller`; `user_id` defaults to the person the caller acts for."""
    return repo.AuditRecord(
        principal=caller.principal,
        user_id=caller.user_id if user_id is None else user_id,
        workspace_id=workspace_id,
        action=action,
        outcome=outcome,
        keys=tuple(keys),
        detail=detail,
    )


class AuditBuffer:
    def __init__(self, db: Database, interval: float = 0.05, max_pending: int = 100_000) -> None:
        self._db = db
        self._interval = interval
        self._max_pending = max_pending
        self._pending: list[repo.AuditRecord] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-buffer")

    def add(self, event: repo.AuditRecord) -> None:
        if len(self._pending) >= self._max_pending:
            # Bounded: with the database gone for long, memory must not grow without limit.
            self.dropped += 1
            return
        self._pending.append(event)
        self._wakeup.set()

    async def flush(self) -> None:
        """Writes the events pending now. Events that arrive while it writes wait for the next
        round: taking them too would turn one batch into a stream of one-row COPYs under load."""
        events, self._pending = self._pending, []
        for start in range(0, len(events), 5000):
            try:
                async with self._db.transaction() as conn:
                    await repo.insert_audit_many(conn, events[start : start + 5000])
            except UNAVAILABLE_ERRORS:
                # Keep them for the next attempt; the database is away.
                self._pending[:0] = events[start:]
                raise

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except UNAVAILABLE_ERRORS:
                log.warning("audit events pending: the database is unavailable (%d buffered)", len(self._pending))
                self._wakeup.set()
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("writing audit events failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self.flush(), timeout=5)
            if self._pending:  # what arrived during that last write
                await asyncio.wait_for(self.flush(), timeout=5)
        except Exception:
            log.error("%d audit events could not be written at shutdown", len(self._pending))
