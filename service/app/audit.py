"""Audit writing for read-only events (resolves).

Changes write their audit row inside their own transaction (see editor.py). A resolve changes
nothing, and writing a row per resolve synchronously would add a round trip and a WAL flush to
the hot path of every workflow block; so resolve events are buffered and written in batches by
one background task, at most `interval` seconds after the resolve. What that costs: a crash can
lose the resolve events of the last interval. Events never carry values.

Identical events buffered together (the same principal, run, keys, versions, outcome: a workflow
that runs the same block in a loop, or an executor that retries) are written as one row that
counts them, with the times of the first and the last (migration 0007). The investigation loses
nothing it can use (each of them would be the same row but for its time), and the database is
spared a row per resolve: each cost Postgres more CPU than the resolve cost the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

from service.app.context import Caller
from service.app.keys import SecretDataLoss
from service.app.usage import UsageRecorder
from service.domain.errors import DataLoss, DomainError, RevisionConflict
from service.store import audit_log
from service.store import repository as repo
from service.store.pool import UNAVAILABLE_ERRORS, Database

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


T = TypeVar("T")


class _Audited(Protocol):
    _db: Database


async def record_refusal(db: Database, caller: Caller, workspace_id: str, action: str, exc: DomainError) -> None:
    """Writes the audit event of a refused attempt, in a transaction of its own (the attempt's
    rolled back): `conflict` for a stale revision, `data_loss` for a value that failed
    authentication (naming the secret among the failed keys), else `denied`."""
    outcome = (
        "conflict" if isinstance(exc, RevisionConflict) else "data_loss" if isinstance(exc, DataLoss) else "denied"
    )
    try:
        async with db.transaction() as conn:
            record = audit_record(caller, workspace_id[:200], action, outcome=outcome, detail=exc.message)
            if isinstance(exc, SecretDataLoss):
                record = dataclasses.replace(record, failed_keys=((exc.key, 0),))
            await repo.insert_audit(conn, record)
    except UNAVAILABLE_ERRORS:
        log.warning("could not record a refused %s in the audit log: the database is unavailable", action)


def audit_refusals(
    action: str, refused: tuple[type[DomainError], ...]
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Records the use case's `refused` errors in the audit log (`record_refusal`), then lets
    them go on to the caller. For methods `(self, caller, workspace_id, ...)` of a service that
    holds its database as `_db`."""

    def wrap(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def audited(self: _Audited, caller: Caller, workspace_id: str, *args: Any, **kwargs: Any) -> T:
            try:
                return await method(self, caller, workspace_id, *args, **kwargs)
            except refused as exc:
                await record_refusal(self._db, caller, workspace_id, action, exc)
                raise

        return audited

    return wrap


# Longest text kept in one audit column. Callers' ids are checked at the edge (256 characters);
# this is the second line of defence for what reaches the log by any other road.
MAX_AUDIT_TEXT = 2000


def _clean_text(text: str) -> str:
    if text.isprintable() and len(text) <= MAX_AUDIT_TEXT:
        return text
    printable = "".join(c if c.isprintable() else "\ufffd" for c in text[:MAX_AUDIT_TEXT])
    return printable + ("..." if len(text) > MAX_AUDIT_TEXT else "")


def clean_record(event: repo.AuditRecord) -> repo.AuditRecord:
    """The record with every text field printable and bounded (NUL cannot be stored at all)."""
    return dataclasses.replace(
        event,
        principal=_clean_text(event.principal),
        action=_clean_text(event.action),
        outcome=_clean_text(event.outcome),
        user_id=_clean_text(event.user_id),
        workspace_id=_clean_text(event.workspace_id),
        execution_id=_clean_text(event.execution_id),
        detail=_clean_text(event.detail),
        keys=tuple((_clean_text(k), s, v) for k, s, v in event.keys),
        keys_json="",  # made again from the cleaned keys
    )


# What stops a write with its events still owed to the log: the database going away, or the
# flush being cancelled (a ListAuditEvents whose caller left, or shutdown).
_INTERRUPTED: tuple[type[BaseException], ...] = (asyncio.CancelledError, *UNAVAILABLE_ERRORS)


def record_bytes(event: repo.AuditRecord, keys_bytes: int | None = None) -> int:
    """An upper bound of what a pending event holds: its texts at 4 bytes a character (the most
    Python stores), each key's entry, and the objects around them. `keys_bytes`: the share of
    its keys and secret ids (`event_keys_bytes`), when the caller has it already."""
    texts = (event.principal, event.action, event.outcome, event.user_id, event.workspace_id)
    size = 4 * (sum(map(len, texts)) + len(event.execution_id) + len(event.detail) + len(event.workflow_id))
    return 400 + size + (event_keys_bytes(event.keys, event.secret_ids) if keys_bytes is None else keys_bytes)


def event_keys_bytes(keys: Sequence[tuple[str, int, int]], secret_ids: Sequence[int]) -> int:
    """record_bytes' share of an event's keys and secret ids."""
    return sum(4 * len(key) + 120 for key, _, _ in keys) + 40 * len(secret_ids)


def _name(exc: BaseException) -> str:
    # The type only: a database error's message may quote the row, and rows hold ids.
    return type(exc).__name__


# How far apart the first and the last event of one row may be. A later identical event starts
# a row of its own: a row's events all fall within this of its time (`at`), which is what lets
# ListAuditEvents find a row by any of its events' times with the time index
# (service/store/audit_log.py), and retention never deletes an event more than this early.
MAX_REPEAT_SPAN: Final = timedelta(seconds=audit_log.MAX_REPEAT_SPAN_SECONDS)


# What indexing a pending event for merging holds besides the event: its identity tuple (the
# event's own strings, referenced), its _Repeats and its time bound, and its slot in the index.
INDEX_BYTES: Final = 400


class _Repeats:
    """A pending event's place in the buffer, and the events identical to it that came after
    (until `until`, MAX_REPEAT_SPAN after the first)."""

    __slots__ = ("count", "last_at", "position", "until")

    def __init__(self, position: int, at: datetime | None) -> None:
        self.position = position
        self.count = 1
        self.last_at: datetime | None = None
        self.until = (at or datetime.now(UTC)) + MAX_REPEAT_SPAN


# What two events must share to be written as one row: all but their time (and `keys_json`,
# which is `keys` as JSON). The fields of AuditRecord in this order: event_identity.
Identity = tuple[
    str,
    str,
    str,
    str,
    str,
    str,
    str,
    int,
    str,
    tuple[tuple[str, int, int], ...],
    tuple[tuple[str, int], ...],
    tuple[int, ...],
]


def event_identity(
    principal: str,
    user_id: str,
    workspace_id: str,
    action: str,
    outcome: str,
    execution_id: str,
    workflow_id: str,
    trigger: int,
    detail: str,
    keys: tuple[tuple[str, int, int], ...],
    failed_keys: tuple[tuple[str, int], ...],
    secret_ids: tuple[int, ...],
) -> Identity:
    """The identity of an event with these fields, before the event is made (AuditBuffer.repeat)."""
    return (
        principal,
        user_id,
        workspace_id,
        action,
        outcome,
        execution_id,
        workflow_id,
        trigger,
        detail,
        keys,
        failed_keys,
        secret_ids,
    )


def _identity(event: repo.AuditRecord) -> Identity:
    return event_identity(
        event.principal,
        event.user_id,
        event.workspace_id,
        event.action,
        event.outcome,
        event.execution_id,
        event.workflow_id,
        event.trigger,
        event.detail,
        event.keys,
        event.failed_keys,
        event.secret_ids,
    )


class AuditBuffer:
    def __init__(
        self, db: Database, interval: float = 0.05, max_pending: int = 100_000, max_pending_bytes: int = 64 << 20
    ) -> None:
        self._db = db
        self._interval = interval
        # Bounded in events and in bytes: one resolve event may list 500 keys of 256 characters
        # (about 130 KB), so 100,000 of them while the database is away would be gigabytes.
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._pending: list[repo.AuditRecord] = []
        # Each pending event by what makes two events identical (_identity), for merging: it
        # holds no more than `_pending` does.
        self._index: dict[Identity, _Repeats] = {}
        self.pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0  # events written (metrics: secrets_audit_events_written_total)
        # One write at a time: an explicit flush (ListAuditEvents shows what was resolved until
        # now) waits for the background's batch in flight, which it could not see in `_pending`,
        # and then writes what is left.
        self._writing = asyncio.Lock()
        # Usage per (secret, workflow), summed from each batch written (service/app/usage.py).
        self.usage: UsageRecorder | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-buffer")

    def repeat(self, identity: Identity, at: datetime) -> bool:
        """Counts an event of this identity (event_identity) that happened `at` on the pending
        one it repeats: True; False when none is pending (the caller then adds the event). What
        a resolve under load does instead of making an event the buffer would only count."""
        return self._count_on(self._index.get(identity), at)

    @staticmethod
    def _count_on(repeats: _Repeats | None, at: datetime) -> bool:
        """Counts an event that happened `at` on the pending one of `repeats`, if its span
        admits it (True)."""
        if repeats is None or at > repeats.until:
            return False
        repeats.count += 1
        repeats.last_at = at
        return True

    def add(self, event: repo.AuditRecord, keys_bytes: int | None = None, identity: Identity | None = None) -> None:
        """Buffers an event; `keys_bytes` as record_bytes takes it, `identity` as _identity
        (when the caller has it). An event identical to one pending but for its time is counted
        on that one (and takes no more memory)."""
        if identity is None:
            identity = _identity(event)
        repeats = self._index.get(identity)
        if event.at is not None and self._count_on(repeats, event.at):
            return
        if repeats is not None:
            # Its span is over: its event takes its count now, and this one starts a row.
            self._fold(self._pending, repeats)
        size = record_bytes(event, keys_bytes) + INDEX_BYTES
        if len(self._pending) >= self._max_pending or self.pending_bytes + size > self._max_pending_bytes:
            # Bounded: with the database gone for long, memory must not grow without limit.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "audit buffer full (%d pending): %d resolve events dropped so far", len(self._pending), self.dropped
                )
            return
        self._pending.append(event)
        self._index[identity] = _Repeats(len(self._pending) - 1, event.at)
        self.pending_bytes += size
        self._wakeup.set()

    def _take(self) -> list[repo.AuditRecord]:
        """The pending events, each with the count and last time of its repeats; none pending after."""
        events, index = self._pending, self._index
        self._pending, self._index = [], {}
        self.pending_bytes = 0
        for repeats in index.values():
            self._fold(events, repeats)
        return events

    @staticmethod
    def _fold(events: list[repo.AuditRecord], repeats: _Repeats) -> None:
        """The event at `repeats.position` in `events`, with the count and last time of its
        repeats so far (which then start again from it)."""
        if repeats.count > 1:
            event = events[repeats.position]
            last = repeats.last_at
            if event.at is not None and last is not None and last < event.at:
                last = event.at  # the clock stepped back: a row's last time is never before its first
            events[repeats.position] = dataclasses.replace(event, count=event.count + repeats.count - 1, last_at=last)
            repeats.count = 1

    def _put_back(self, events: Sequence[repo.AuditRecord]) -> None:
        """Events taken for a write that did not happen go back in front, in their order."""
        self._pending[:0] = events
        for repeats in self._index.values():  # the events pending meanwhile moved down
            repeats.position += len(events)
        self.pending_bytes += sum(map(record_bytes, events))

    async def flush(self) -> None:
        """Writes the events pending now. Events that arrive while it writes wait for the next
        round: taking them too would turn one batch into a stream of one-row COPYs under load."""
        async with self._writing:
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        events = self._take()
        for start in range(0, len(events), 5000):
            chunk = events[start : start + 5000]
            try:
                async with self._db.transaction() as conn:
                    await repo.insert_audit_many(conn, chunk)
                self.written += sum(e.count for e in chunk)
            except UNAVAILABLE_ERRORS:
                # Keep them for the next attempt; the database is away.
                self._put_back(events[start:])
                raise
            except asyncio.CancelledError:
                # A ListAuditEvents whose caller went away, or shutdown: the events this flush took
                # are put back, not lost (a batch cancelled while it commits may be written twice).
                self._put_back(events[start:])
                raise
            except Exception as exc:
                # One record the database refuses must not cost the others their place in the
                # log: write this batch's records one by one, cleaned, and count what still fails.
                log.error(
                    "a batch of %d audit events was refused (%s); writing them one by one", len(chunk), _name(exc)
                )
                await self._write_one_by_one(chunk, after=events[start + len(chunk) :])
            if self.usage is not None:
                self.usage.merge(chunk)
        if self.usage is not None:
            await self.usage.flush()

    async def _write_one_by_one(
        self, events: Sequence[repo.AuditRecord], after: Sequence[repo.AuditRecord] = ()
    ) -> None:
        """Writes `events` one by one; when interrupted, puts back what is left of them and the
        events of the batches `after` them, which the flush has not reached yet."""
        lost = 0
        for i, event in enumerate(events):
            try:
                async with self._db.transaction() as conn:
                    await repo.insert_audit(conn, clean_record(event))
                self.written += event.count
            except _INTERRUPTED:
                self._put_back([*events[i:], *after])
                raise
            except Exception as exc:
                lost += event.count
                log.error("an audit event (%s) could not be written and is lost: %s", event.action, _name(exc))
        if lost:
            self.dropped += lost

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
