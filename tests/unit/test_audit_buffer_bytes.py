"""The resolve audit buffer is bounded in bytes as well as in events: one resolve event may list
500 keys of 256 characters, so 100,000 of them held while the database is away would be
gigabytes. Events past the budget are dropped and counted (and logged at ERROR)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.app.audit import INDEX_BYTES, AuditBuffer, record_bytes
from service.domain.errors import Unavailable
from service.store import repository as repo


class _AwayDatabase:
    """A database that is not there: every transaction fails as unavailable."""

    @contextlib.asynccontextmanager
    async def transaction(self, timeout: float = 5.0) -> AsyncIterator[Any]:
        raise Unavailable("away")
        yield  # pragma: no cover


def _big_event(n: int) -> repo.AuditRecord:
    keys = tuple((f"K{n:06d}" + "x" * 249, 1, 1) for _ in range(500))
    return repo.AuditRecord(principal="exec", action="inputs.resolve", outcome="ok", workspace_id="ws", keys=keys)


async def test_the_buffer_drops_events_past_its_byte_budget_and_puts_back_what_it_could_not_write() -> None:
    buffer = AuditBuffer(_AwayDatabase(), max_pending_bytes=4 * 1024 * 1024)  # type: ignore[arg-type]
    for n in range(200):
        buffer.add(_big_event(n))
    assert buffer.dropped > 0
    assert 0 < buffer.pending_bytes <= 4 * 1024 * 1024
    kept = buffer.pending_bytes
    # Each event, and its place in the index that merges repeats (AuditBuffer.add).
    assert kept == sum(record_bytes(_big_event(0)) + INDEX_BYTES for _ in range(200 - buffer.dropped))
    with pytest.raises(Unavailable):
        await buffer.flush()
    # Put back and counted again, without an index (events put back are not merged into).
    assert buffer.pending_bytes == kept - INDEX_BYTES * (200 - buffer.dropped)
