"""Attack: a resolve kept out of the audit log by cancelling a flush.

`AuditBuffer.flush` takes every pending resolve event out of the buffer and then writes them.
Cancellation (a `CancelledError`, which is not an `Exception`) was caught by neither of its
handlers, so the events it had taken were simply gone. Two roads lead there:

- `ListAuditEvents` flushes the buffer first, in the call's own task: an operator whose call
  hits its deadline (or who cancels it) while that flush writes loses the resolve events in it.
  Black box against a running server: 600 resolves, each followed by a ListAuditEvents with a
  1-6 ms deadline, left a resolve with no audit event (execution id `d3bdc4f4-343`).
- `AuditBuffer.close` (SIGTERM) cancels the background task, which may be writing a batch.

Now a cancelled flush puts back what it had not written before it lets the cancellation go on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from service.app.audit import AuditBuffer
from service.store import repository as repo


class _StuckDatabase:
    """A database whose transactions never start: the flush waits there until cancelled."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.entered.set()
        await asyncio.Event().wait()
        yield None  # pragma: no cover


def _event(n: int) -> repo.AuditRecord:
    return repo.AuditRecord(
        principal="dev-executor",
        user_id="u1",
        workspace_id="ws1",
        action="inputs.resolve",
        outcome="ok",
        keys=(("API", 1, 1),),
        execution_id=f"run-{n}",
    )


async def test_a_cancelled_flush_keeps_its_events() -> None:
    db = _StuckDatabase()
    buffer = AuditBuffer(db, interval=0.0)  # type: ignore[arg-type]
    for n in range(3):
        buffer.add(_event(n))
    flushing = asyncio.create_task(buffer.flush())
    await asyncio.wait_for(db.entered.wait(), 5)
    buffer.add(_event(3))  # arrives while the batch is being written
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    assert [e.execution_id for e in buffer._pending] == ["run-0", "run-1", "run-2", "run-3"]


async def test_a_cancelled_one_by_one_write_keeps_the_rest() -> None:
    db = _StuckDatabase()
    buffer = AuditBuffer(db, interval=0.0)  # type: ignore[arg-type]
    writing = asyncio.create_task(buffer._write_one_by_one([_event(0), _event(1)], after=[_event(2)]))
    await asyncio.wait_for(db.entered.wait(), 5)
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    # the rest of its batch and the batches after it, which the flush had not reached
    assert [e.execution_id for e in buffer._pending] == ["run-0", "run-1", "run-2"]
