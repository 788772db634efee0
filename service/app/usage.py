"""Usage of secrets by workflows (issue 13): recorded from the resolve audit batches, shown by
GetSecret and ListSecrets, and checked by the in-use guard on delete and rename.

Recording costs a resolve nothing it did not pay already: its audit event carries the workflow
and the ids of the secrets it used, and the audit buffer (service/app/audit.py) hands every batch
it wrote to `UsageRecorder`, which sums it per (secret, workflow) and per day and writes the sums
with one statement. A batch whose usage cannot be written (the database away) is kept, bounded
(domain/usage.py, MAX_TALLY_ENTRIES), and added to the next. What is lost: the usage of resolves
whose audit events are lost (a crash within the audit interval, or the audit buffer full).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from service.domain.batch import Op, OpKind
from service.domain.errors import FailedPrecondition, PreconditionViolation
from service.domain.model import Scope
from service.domain.resolution import Candidate, decide
from service.domain.usage import MAX_GUARD_WORKFLOWS, UsageTally, guard_message, guard_violations
from service.store import repository as repo
from service.store import usage as usage_store
from service.store.pool import UNAVAILABLE_ERRORS, Database

log = logging.getLogger(__name__)

# What keeps a tally for the next flush: the database away, or the flush cancelled (shutdown).
_KEEP: tuple[type[BaseException], ...] = (asyncio.CancelledError, *UNAVAILABLE_ERRORS)
# Usage rows pruned per statement, and at most this many statements per maintenance round.
PRUNE_BATCH = 5000
PRUNE_ROUNDS = 20


class _Resolves:
    """The resolves of one batch by one workflow that used the same secrets: how many, the first
    and last time, and the last one's execution."""

    __slots__ = ("count", "first", "last", "last_execution_id")

    def __init__(self, first: datetime, last: datetime, execution_id: str, count: int) -> None:
        self.count = count
        self.first, self.last = first, last
        self.last_execution_id = execution_id

    def add(self, first: datetime, last: datetime, execution_id: str, count: int) -> None:
        self.count += count
        if last >= self.last:
            self.last, self.last_execution_id = last, execution_id
        if first < self.first:
            self.first = first


class UsageRecorder:
    """Sums resolve events into usage, and writes the sums once per audit batch."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending = UsageTally()
        self.writes = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def merge(self, events: Sequence[repo.AuditRecord]) -> None:
        """Adds the resolves of a batch the audit buffer wrote (events that used no secret, and
        events other than resolves, carry no secret ids and count nothing)."""
        tally = self._pending
        now: datetime | None = None
        # A batch holds the same workflows' resolves of the same secrets again and again: they
        # are counted per (workflow, secrets) first, then added to the tally once per group
        # (per resolve only for a group whose resolves fall on two UTC days).
        groups: dict[tuple[str, tuple[int, ...]], _Resolves] = {}
        # An event that stands for several (AuditRecord.count) counts them all, at its last time.
        for event in events:
            if event.secret_ids:
                at = event.at
                if at is None:
                    at = now = now or datetime.now(UTC)
                last = event.last_at or at
                group = groups.get((event.workflow_id, event.secret_ids))
                if group is None:
                    groups[(event.workflow_id, event.secret_ids)] = _Resolves(at, last, event.execution_id, event.count)
                else:
                    group.add(at, last, event.execution_id, event.count)
        for (workflow_id, secret_ids), group in groups.items():
            if group.first.astimezone(UTC).date() == group.last.astimezone(UTC).date():
                tally.add(workflow_id, group.last_execution_id, group.last, secret_ids, group.count)
                continue
            for event in events:  # rare: the batch spans midnight (UTC)
                if event.workflow_id == workflow_id and event.secret_ids == secret_ids:
                    at = event.last_at or event.at or group.last
                    tally.add(workflow_id, event.execution_id, at, secret_ids, event.count)

    async def flush(self) -> None:
        """Writes what is pending. Kept for the next flush when the database is away; dropped
        (and logged) on any other failure, so that one bad batch cannot block the rest."""
        if not self._pending:
            return
        tally, self._pending = self._pending, UsageTally()
        try:
            async with self._db.connection() as conn:
                await usage_store.record(conn, tally)
        except _KEEP as exc:
            tally.merge(self._pending)
            self._pending = tally
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("usage of %d (secret, workflow) pairs pending: the database is unavailable", len(tally))
            return
        except Exception as exc:
            # The type only: a database error's message may quote the row.
            log.error("usage of %d (secret, workflow) pairs could not be written: %s", len(tally), type(exc).__name__)
            return
        self.writes += 1
        if tally.dropped:
            log.error("usage: %d uses were not counted (too many pairs pending)", tally.dropped)


def _action(ops: Sequence[Op]) -> str:
    kinds = {op.kind for op in ops}
    if kinds == {OpKind.DELETE}:
        return "deleting"
    if kinds == {OpKind.RENAME}:
        return "renaming"
    return "deleting and renaming"


async def check_in_use(
    conn: asyncpg.Connection,
    scope: Scope,
    ops: Sequence[Op],
    stored: dict[str, repo.SecretRow],
    window_days: int,
) -> None:
    """The in-use guard: raises FailedPrecondition (with a PreconditionFailure) when the batch
    deletes or renames a secret that workflows used in the last `window_days` days, or a
    workspace secret whose removal would let members' runs fall back to a personal secret of
    the same key (counted, never named). `window_days` 0 turns the guard off."""
    targets = [op for op in ops if op.kind in (OpKind.DELETE, OpKind.RENAME)]
    if not targets or window_days <= 0:
        return
    ids = [stored[op.key].id for op in targets]
    recent = await usage_store.recent_uses(conn, ids, window_days, MAX_GUARD_WORKFLOWS)
    fallbacks: dict[int, int] = {}
    if scope is Scope.WORKSPACE:
        for row in await usage_store.personal_namesakes(conn, ids):
            # The rule resolution applies (domain.resolution.decide): the member's run uses the
            # workspace secret now, and would use their own once it is gone.
            workspace = Candidate(Scope.WORKSPACE, row.key, 1, row.restricted, row.role)
            personal = Candidate(Scope.PERSONAL, row.key, 1)
            chosen = decide(row.key, row.permission, workspace, personal).chosen
            if chosen is not None and chosen.scope is Scope.WORKSPACE:
                fallbacks[row.secret_id] = fallbacks.get(row.secret_id, 0) + 1
    violations: list[PreconditionViolation] = []
    refused: dict[str, tuple[int, int]] = {}
    for op in targets:
        secret_id = stored[op.key].id
        found = recent.get(secret_id)
        uses = found.uses if found else []
        workflows = found.workflows if found else 0
        action = "deleting" if op.kind is OpKind.DELETE else "renaming"
        mine = guard_violations(op.key, action, uses, workflows, fallbacks.get(secret_id, 0), window_days)
        if mine:
            violations.extend(mine)
            refused[op.key] = (workflows, fallbacks.get(secret_id, 0))
    if refused:
        raise FailedPrecondition(guard_message(_action(targets), refused, window_days), violations)


async def prune(db: Database) -> int:
    """Deletes usage that no longer counts (domain/usage.py says what), a batch at a time."""
    gone = 0
    for _ in range(PRUNE_ROUNDS):
        async with db.connection() as conn:
            n = await usage_store.prune(conn, PRUNE_BATCH)
        gone += n
        if n < PRUNE_BATCH:
            break
    return gone
