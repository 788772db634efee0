"""Validating and planning a SaveSecrets batch (SPEC 2.6), with no I/O.

`validate_changes` looks at the batch alone (keys, values, duplicates, size) and reports every
bad change at once. `plan_changes` then checks the batch against what is stored and what the
caller may do, and says exactly what to write. The store applies the plan in one transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.domain import policy
from service.domain.dotenv import DotenvEntry
from service.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from service.domain.keys import key_problem, value_problem
from service.domain.limits import MAX_CHANGES_PER_SAVE, NOTE_OVERRIDES_LISTED
from service.domain.model import Permission, Scope, SecretRole
from service.domain.values import SecretValue


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    value: SecretValue | None = None
    delete: bool = False
    rename_to: str | None = None

    @property
    def kind(self) -> str:
        if self.value is not None:
            return "set"
        if self.delete:
            return "delete"
        if self.rename_to is not None:
            return "rename"
        return "none"


class OpKind(enum.Enum):
    CREATE = "created"
    UPDATE = "updated"
    RENAME = "renamed"
    DELETE = "deleted"


@dataclass(frozen=True, slots=True)
class Existing:
    """What planning needs to know of a stored secret."""

    key: str
    version: int
    caller_role: SecretRole | None = None


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    key: str
    # The version current after the op (0 for a delete).
    version: int
    value: SecretValue | None = None
    new_key: str | None = None


def validate_changes(changes: Sequence[Change], max_changes: int = MAX_CHANGES_PER_SAVE) -> None:
    if not changes:
        raise InvalidArgument("a save needs at least one change", [FieldViolation("changes", "is empty")])
    if len(changes) > max_changes:
        raise InvalidArgument(
            f"a save may hold at most {max_changes} changes, got {len(changes)}",
            [FieldViolation("changes", f"more than {max_changes} changes")],
        )
    violations: list[FieldViolation] = []
    first_seen: dict[str, int] = {}

    def claim(key: str, index: int, field: str) -> None:
        # A key may appear once per batch, as a key or as a rename target: two changes to one key
        # would make the outcome depend on their order.
        if key in first_seen:
            violations.append(
                FieldViolation(field, f"key {key!r} also appears in changes[{first_seen[key]}]; one change per key")
            )
        else:
            first_seen[key] = index

    for i, change in enumerate(changes):
        problem = key_problem(change.key)
        if problem:
            violations.append(FieldViolation(f"changes[{i}].key", problem))
        else:
            claim(change.key, i, f"changes[{i}].key")
        kind = change.kind
        if kind == "none":
            violations.append(FieldViolation(f"changes[{i}]", "needs one of value, delete or rename_to"))
        elif kind == "set":
            assert change.value is not None
            problem = value_problem(change.value.reveal())
            if problem:
                violations.append(FieldViolation(f"changes[{i}].value", problem))
        elif kind == "rename":
            assert change.rename_to is not None
            problem = key_problem(change.rename_to)
            if problem:
                violations.append(FieldViolation(f"changes[{i}].rename_to", problem))
            elif change.rename_to == change.key:
                violations.append(FieldViolation(f"changes[{i}].rename_to", "is the same as key"))
            else:
                claim(change.rename_to, i, f"changes[{i}].rename_to")
    if violations:
        noun = "change is" if len(violations) == 1 else "changes are"
        raise InvalidArgument(f"{len(violations)} {noun} invalid; nothing was saved", violations)


def touched_keys(changes: Sequence[Change]) -> list[str]:
    keys = [c.key for c in changes]
    keys.extend(c.rename_to for c in changes if c.rename_to is not None)
    return keys


def plan_changes(
    scope: Scope,
    changes: Sequence[Change],
    existing: Mapping[str, Existing],
    permission: Permission | None,
    user_id: str,
    workspace_id: str,
) -> list[Op]:
    """The ops that apply `changes` (already validated) to the stored `existing` secrets.

    Raises NotFound, AlreadyExists or PermissionDenied for the first change that cannot apply;
    the whole batch is then rejected.
    """
    ops: list[Op] = []
    workspace = scope is Scope.WORKSPACE
    for i, change in enumerate(changes):
        current = existing.get(change.key)
        where = f"changes[{i}]"
        if change.value is not None:
            if current is None:
                if workspace:
                    policy.require_create(permission, user_id, workspace_id, change.key)
                ops.append(Op(OpKind.CREATE, change.key, 1, value=change.value))
            else:
                if workspace:
                    policy.require_modify(
                        permission, current.caller_role, user_id, workspace_id, change.key, "changing"
                    )
                ops.append(Op(OpKind.UPDATE, change.key, current.version + 1, value=change.value))
            continue
        if current is None:
            raise NotFound(f"{where}: secret {change.key!r} does not exist")
        if change.delete:
            if workspace:
                policy.require_modify(permission, current.caller_role, user_id, workspace_id, change.key, "deleting")
            ops.append(Op(OpKind.DELETE, change.key, 0))
            continue
        assert change.rename_to is not None
        if change.rename_to in existing:
            raise AlreadyExists(f"{where}: cannot rename {change.key!r}: secret {change.rename_to!r} already exists")
        if workspace:
            policy.require_modify(permission, current.caller_role, user_id, workspace_id, change.key, "renaming")
        ops.append(Op(OpKind.RENAME, change.key, current.version, new_key=change.rename_to))
    return ops


# -- .env import (SPEC 2.5) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportLine:
    key: str
    line: int
    action: str  # "created", "updated", "unchanged" or "skipped"
    note: str


def import_comparisons(
    scope: Scope, entries: Sequence[DotenvEntry], existing: Mapping[str, Existing], permission: Permission | None
) -> list[str]:
    """The keys whose stored value an import must open to compare: those that exist and that the
    caller may change. Decided before any value is opened, so that a caller who may not change a
    secret gets the same answer whether the imported value equals the stored one or not: an
    import cannot confirm a guess (SPEC 2.2)."""
    return [
        e.key
        for e in entries
        if (current := existing.get(e.key)) is not None
        and (scope is Scope.PERSONAL or policy.can_modify_workspace_secret(permission, current.caller_role))
    ]


def plan_import(
    scope: Scope,
    entries: Sequence[DotenvEntry],
    existing: Mapping[str, Existing],
    unchanged: frozenset[str],
    permission: Permission | None,
    user_id: str,
    workspace_id: str,
    overwrite_existing: bool,
) -> tuple[list[ImportLine], list[Op]]:
    """What an import reports for each entry and the ops that write it. `unchanged` holds the keys
    (among `import_comparisons`) whose stored value equals the imported one. Raises
    PermissionDenied when the caller may not create a new workspace key (the whole import is
    then refused, as a save would be)."""
    lines: list[ImportLine] = []
    ops: list[Op] = []
    workspace = scope is Scope.WORKSPACE
    for entry in entries:
        note = overrides_note(entry.overrides)
        current = existing.get(entry.key)
        if current is None:
            if workspace:
                policy.require_create(permission, user_id, workspace_id, entry.key)
            ops.append(Op(OpKind.CREATE, entry.key, 1, value=entry.value))
            lines.append(ImportLine(entry.key, entry.line, "created", note))
        elif workspace and not policy.can_modify_workspace_secret(permission, current.caller_role):
            lines.append(
                ImportLine(
                    entry.key,
                    entry.line,
                    "skipped",
                    _join(note, "changing it needs workspace ADMIN or the secret's ADMIN role"),
                )
            )
        elif entry.key in unchanged:
            lines.append(ImportLine(entry.key, entry.line, "unchanged", note))
        elif not overwrite_existing:
            lines.append(ImportLine(entry.key, entry.line, "skipped", _join(note, "exists; overwrite_existing is off")))
        else:
            ops.append(Op(OpKind.UPDATE, entry.key, current.version + 1, value=entry.value))
            lines.append(ImportLine(entry.key, entry.line, "updated", note))
    return lines, ops


def overrides_note(overrides: Sequence[int]) -> str:
    """`overrides lines 1, 4`; for many, the first few, a count and the last (a key repeated on a
    million lines made a note of megabytes)."""
    if not overrides:
        return ""
    if len(overrides) <= NOTE_OVERRIDES_LISTED:
        return f"overrides line{'s' if len(overrides) > 1 else ''} {', '.join(map(str, overrides))}"
    first = ", ".join(map(str, overrides[:5]))
    return f"overrides lines {first} and {len(overrides) - 5:,} more, the last on line {overrides[-1]:,}"


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second
