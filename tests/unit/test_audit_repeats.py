"""Identical resolve events buffered together are written as one row that counts them (issue 15:
a row per resolve cost Postgres more CPU than the resolve). Each row keeps the time of the first
and the last of its events; events that differ in anything but their time stay apart; events put
back after a write that did not happen keep their counts, and the ones pending meanwhile theirs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from service.app.audit import MAX_REPEAT_SPAN, AuditBuffer, _identity, event_identity
from service.store import repository as repo

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class _Conn:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def copy_records_to_table(self, table: str, *, columns: list[str], records: list[tuple[Any, ...]]) -> None:
        self.rows.extend(dict(zip(columns, record, strict=True)) for record in records)


class _RecordingDatabase:
    """Every batch written is kept as rows, by column; `stuck` makes transactions wait forever."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.stuck = False
        self.entered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.entered.set()
        if self.stuck:
            await asyncio.Event().wait()
        yield _Conn(self.rows)


def _event(execution_id: str, seconds: int, *, key: str = "API", version: int = 1) -> repo.AuditRecord:
    return repo.AuditRecord(
        principal="exec",
        user_id="u1",
        workspace_id="ws1",
        action="inputs.resolve",
        outcome="ok",
        keys=((key, 1, version),),
        execution_id=execution_id,
        workflow_id="wf",
        secret_ids=(7,),
        at=T0 + timedelta(milliseconds=100 * seconds),
    )


async def test_identical_events_are_one_row_with_their_count_and_first_and_last_time() -> None:
    db = _RecordingDatabase()
    buffer = AuditBuffer(db)  # type: ignore[arg-type]
    for second in range(5):
        buffer.add(_event("run-1", second))
    buffer.add(_event("run-2", 5))  # another run
    buffer.add(_event("run-1", 6, version=2))  # another version of the key
    buffer.add(_event("run-1", 7))
    await buffer.flush()
    assert [(r["execution_id"], r["keys"], r["occurrences"], r["at"], r["last_at"]) for r in db.rows] == [
        ("run-1", '[{"key": "API", "scope": 1, "version": 1}]', 6, T0, T0 + timedelta(milliseconds=100 * 7)),
        ("run-2", '[{"key": "API", "scope": 1, "version": 1}]', 1, T0 + timedelta(milliseconds=100 * 5), None),
        ("run-1", '[{"key": "API", "scope": 1, "version": 2}]', 1, T0 + timedelta(milliseconds=100 * 6), None),
    ]
    assert buffer.written == 8
    # A repeat takes no room in the buffer: its bytes are the first event's.
    buffer.add(_event("run-3", 0))
    held = buffer.pending_bytes
    for second in range(1, 10):  # within MAX_REPEAT_SPAN of the first
        buffer.add(_event("run-3", second))
    assert buffer.pending_bytes == held


async def test_events_put_back_keep_their_counts_and_those_pending_meanwhile_keep_theirs() -> None:
    db = _RecordingDatabase()
    buffer = AuditBuffer(db, interval=0.0)  # type: ignore[arg-type]
    db.stuck = True
    buffer.add(_event("run-a", 0))
    buffer.add(_event("run-a", 1))
    flushing = asyncio.create_task(buffer.flush())
    await asyncio.wait_for(db.entered.wait(), 5)
    buffer.add(_event("run-b", 2))  # pending while the batch of run-a is being written
    buffer.add(_event("run-b", 3))
    flushing.cancel()  # the batch of run-a goes back in front
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    buffer.add(_event("run-b", 4))  # still counted on run-b's event, not on what moved before it
    db.stuck = False
    await buffer.flush()
    assert [(r["execution_id"], r["occurrences"], r["last_at"]) for r in db.rows] == [
        ("run-a", 2, T0 + timedelta(milliseconds=100 * 1)),
        ("run-b", 3, T0 + timedelta(milliseconds=100 * 4)),
    ]


async def test_a_repeat_is_counted_on_the_pending_event_of_its_identity_without_an_event() -> None:
    db = _RecordingDatabase()
    buffer = AuditBuffer(db)  # type: ignore[arg-type]
    first = _event("run-1", 0)
    identity = event_identity(
        "exec", "u1", "ws1", "inputs.resolve", "ok", "run-1", "wf", 0, "", (("API", 1, 1),), (), (7,)
    )
    assert not buffer.repeat(identity, T0)  # nothing pending: the caller adds the event
    buffer.add(first, identity=identity)
    assert buffer.repeat(identity, T0 + timedelta(milliseconds=100 * 3))
    buffer.add(_event("run-1", 4))  # the same identity, found from the event itself
    other_run = event_identity(
        "exec", "u1", "ws1", "inputs.resolve", "ok", "run-2", "wf", 0, "", (("API", 1, 1),), (), (7,)
    )
    assert not buffer.repeat(other_run, T0)
    await buffer.flush()
    assert [(r["execution_id"], r["occurrences"], r["last_at"]) for r in db.rows] == [
        ("run-1", 3, T0 + timedelta(milliseconds=100 * 4))
    ]
    assert not buffer.repeat(identity, T0)  # written: nothing pending any more


async def test_a_row_spans_at_most_max_repeat_span_then_another_starts() -> None:
    """A row's events all fall within MAX_REPEAT_SPAN of its time, so that a time-range listing
    finds it by any of them (tests/findings/test_attack_issue15_audit_time_range.py)."""
    db = _RecordingDatabase()
    buffer = AuditBuffer(db)  # type: ignore[arg-type]
    span_tenths = int(MAX_REPEAT_SPAN / timedelta(milliseconds=100))
    for tenth in (0, 3, span_tenths, span_tenths + 1, span_tenths + 4):
        buffer.add(_event("run-1", tenth))
    buffer.repeat(_identity(_event("run-1", 0)), T0 + timedelta(milliseconds=100 * (2 * span_tenths + 2)))
    await buffer.flush()
    assert [(r["occurrences"], r["at"], r["last_at"]) for r in db.rows] == [
        (3, T0, T0 + MAX_REPEAT_SPAN),
        (2, T0 + timedelta(milliseconds=100 * (span_tenths + 1)), T0 + timedelta(milliseconds=100 * (span_tenths + 4))),
    ]
    assert buffer.written == 5  # the repeat past both spans found no row to count on: not written
