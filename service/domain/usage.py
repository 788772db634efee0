"""Usage of secrets by workflows, and the in-use guard on delete and rename (issue 13), as pure
rules: no I/O, no values. Usage is kept per (secret, workflow), never per run.

- `UsageTally` sums the resolves of one audit batch (or of several, while the database is away)
  into one row per (secret, workflow) and one per (secret, workflow, UTC day): the store writes a
  batch with one statement, however many resolves it holds.
- `guard_violations` says why deleting or renaming a secret would break or change runs: the
  workflows that used it in the last N days (ids and when), and, for a workspace secret, how
  many members' runs would fall back to a personal secret of the same key (a count, no names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from service.domain.errors import PreconditionViolation

# "Uses in the last 30 days" counts the uses of the last 30 UTC days, today included.
USAGE_WINDOW_DAYS: Final = 30
# A (secret, workflow) row whose last use is older than this is pruned: the table then holds
# what ran in the last year, and ListSecrets' last_used_at is unset for a secret unused as long.
USAGE_RETENTION_DAYS: Final = 365
# GetSecret lists the workflows that used a secret most recently, at most this many.
MAX_USAGE_LISTED: Final = 100
# A refusal lists at most this many workflows per secret, then how many more there are.
MAX_GUARD_WORKFLOWS: Final = 20
# Distinct (secret, workflow) pairs and (secret, workflow, day) triples a tally holds while the
# database is away; past it, new pairs are dropped (and counted), so memory stays bounded.
MAX_TALLY_ENTRIES: Final = 100_000


@dataclass(slots=True)
class LastUse:
    at: datetime
    execution_id: str


class UsageTally:
    """Uses summed per (secret, workflow) and per (secret, workflow, UTC day)."""

    __slots__ = ("days", "dropped", "last", "max_entries")

    def __init__(self, max_entries: int = MAX_TALLY_ENTRIES) -> None:
        self.last: dict[tuple[int, str], LastUse] = {}
        self.days: dict[tuple[int, str, date], int] = {}
        self.dropped = 0
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self.last)

    def add(
        self, workflow_id: str, execution_id: str, at: datetime, secret_ids: Iterable[int], resolves: int = 1
    ) -> None:
        """One resolve (or `resolves` of them, all on the UTC day of `at`, the last one at `at` by
        `execution_id`): each secret it used counts one use, whatever its number of references."""
        day = at.astimezone(UTC).date()
        for secret_id in secret_ids:
            self._count(secret_id, workflow_id, at, execution_id, day, resolves)

    def _count(self, secret_id: int, workflow_id: str, at: datetime, execution_id: str, day: date, uses: int) -> None:
        pair = (secret_id, workflow_id)
        last = self.last.get(pair)
        if last is None:
            if len(self.last) >= self.max_entries or len(self.days) >= self.max_entries:
                self.dropped += uses
                return
            self.last[pair] = LastUse(at, execution_id)
        elif at >= last.at:
            last.at = at
            last.execution_id = execution_id
        triple = (secret_id, workflow_id, day)
        self.days[triple] = self.days.get(triple, 0) + uses

    def merge(self, other: UsageTally) -> None:
        """Adds another tally's counts (a batch whose write failed, put back in front)."""
        for (secret_id, workflow_id, day), uses in other.days.items():
            last = other.last[(secret_id, workflow_id)]
            self._count(secret_id, workflow_id, last.at, last.execution_id, day, uses)
        self.dropped += other.dropped

    def last_rows(self) -> list[tuple[int, str, datetime, str]]:
        """(secret id, workflow id, last used at, last execution id), sorted: every writer locks
        the rows in one order, so two replicas writing the same pairs cannot deadlock."""
        return sorted((s, w, u.at, u.execution_id) for (s, w), u in self.last.items())

    def day_rows(self) -> list[tuple[int, str, date, int]]:
        return sorted((s, w, d, n) for (s, w, d), n in self.days.items())


@dataclass(frozen=True, slots=True)
class WorkflowUse:
    """How one workflow used one secret."""

    workflow_id: str
    last_used_at: datetime
    last_execution_id: str
    # Uses in the last USAGE_WINDOW_DAYS days.
    uses: int


IN_USE: Final = "SECRET_IN_USE"
GO_AHEAD: Final = "Update the workflows first, or set acknowledge_in_use to go ahead"
PERSONAL_FALLBACK: Final = "PERSONAL_FALLBACK"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow_label(workflow_id: str) -> str:
    return repr(workflow_id) if workflow_id else "(resolves that named no workflow)"


def guard_violations(
    key: str,
    action: str,
    uses: Sequence[WorkflowUse],
    workflows: int,
    fallbacks: int,
    window_days: int,
) -> list[PreconditionViolation]:
    """Why `action` ("deleting", "renaming") secret `key` would break or change runs: one
    violation per workflow that used it in the window (`uses`, most recent first, at most
    MAX_GUARD_WORKFLOWS of the `workflows` there are; then one saying how many more), and one
    when `fallbacks` members' runs would use a personal secret of the same key instead. Empty:
    nothing stands in the way."""
    found: list[PreconditionViolation] = []
    ordered = sorted(uses, key=lambda u: (u.last_used_at, u.workflow_id), reverse=True)[:MAX_GUARD_WORKFLOWS]
    for use in ordered:
        execution = f", execution {use.last_execution_id!r}" if use.last_execution_id else ""
        found.append(
            PreconditionViolation(
                IN_USE,
                f"workflows/{use.workflow_id}",
                f"{action} secret {key!r}: workflow {workflow_label(use.workflow_id)} last used it at "
                f"{_when(use.last_used_at)}{execution}",
            )
        )
    more = max(workflows, len(uses)) - len(ordered)
    if more > 0:
        found.append(
            PreconditionViolation(
                IN_USE,
                f"secrets/{key}",
                f"{action} secret {key!r}: {more} more workflow(s) used it in the last {window_days} days",
            )
        )
    if fallbacks:
        found.append(
            PreconditionViolation(
                PERSONAL_FALLBACK,
                f"secrets/{key}",
                f"{action} workspace secret {key!r} would make the runs of {fallbacks} workspace member(s) use "
                f"a personal secret of the same key instead",
            )
        )
    return found


def guard_message(action: str, refused: dict[str, tuple[int, int]], window_days: int) -> str:
    """The refusal's message: per secret key, (workflows that used it in the window, members
    whose runs would fall back to a personal secret), and how to go ahead anyway."""
    parts = []
    for key, (workflows, fallbacks) in refused.items():
        reasons = []
        if workflows:
            reasons.append(f"used by {workflows} workflow(s) in the last {window_days} days")
        if fallbacks:
            reasons.append(f"runs of {fallbacks} member(s) would fall back to a personal secret of the same key")
        parts.append(f"{key!r} ({'; '.join(reasons)})")
    listed = ", ".join(parts)
    return f"{action} would break or change workflow runs: {listed}; nothing was saved. " + GO_AHEAD
