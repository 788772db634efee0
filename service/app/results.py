"""What the use cases return: their own types, so that store rows never travel above `app`.

None of them carries a value, a sealed value or a row id: they are what an editor may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.domain.model import BlockErrorCode, Permission, Scope
from service.store import repository as repo


@dataclass(frozen=True, slots=True)
class SecretSummary:
    key: str
    scope: Scope
    display_name: str
    description: str
    version: int
    restricted: bool
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    # Issue 13: when the secret expires (None: never), and when a workflow last used it (None:
    # not in the last year, or never).
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


def summary_of(row: repo.SecretRow, last_used_at: datetime | None = None) -> SecretSummary:
    return SecretSummary(
        row.key,
        row.scope,
        row.display_name,
        row.description,
        row.version,
        row.restricted,
        row.created_at,
        row.created_by,
        row.updated_at,
        row.updated_by,
        row.expires_at,
        last_used_at,
    )


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    created_at: datetime
    created_by: str


def version_of(row: repo.VersionRow) -> VersionInfo:
    return VersionInfo(row.version, row.created_at, row.created_by)


@dataclass(frozen=True, slots=True)
class WorkspaceMember:
    workspace_id: str
    user_id: str
    email: str
    permission: Permission
    external: bool
    updated_at: datetime


def member_of(row: repo.MemberRow) -> WorkspaceMember:
    return WorkspaceMember(row.workspace_id, row.user_id, row.email, row.permission, row.external, row.updated_at)


@dataclass(frozen=True, slots=True)
class Explained:
    """What a run would use for one key, as ExplainReferences shows it: the scope and version
    chosen (version 0 when it is another user's to know), or the problem and why."""

    scope: Scope | None
    version: int
    problem: BlockErrorCode | None
    message: str
