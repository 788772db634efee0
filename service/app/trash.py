"""The trash (issue 13): deleted secrets kept sealed for SECRETS_TRASH_DAYS days, listed,
restored whole, or purged for good (explicitly, or once the window has passed).

A delete (SaveSecrets) moves the secret into the trash under its own id, in the transaction of
the save (service/store/trash.py). Nothing in the trash is ever resolved: resolves read only the
live tables. A restore moves it back under the same id, so every kept version opens again and
resolves to the value it had; it is a change of the scope (revision bumped, resolve caches told).
Values never leave their sealed form here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg

from service.app.audit import audit_record, audit_refusals
from service.app.cache import scope_tag
from service.app.changes import Changes
from service.app.context import Caller
from service.app.usage import prune as prune_usage
from service.domain import policy
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from service.domain.keys import require_id
from service.domain.model import Permission, Scope
from service.store import repository as repo
from service.store import trash as trash_store
from service.store.pool import UNAVAILABLE_ERRORS, Database

log = logging.getLogger(__name__)

# Deleted secrets purged per transaction once the window has passed.
PURGE_BATCH = 200
# How often each replica looks for deleted secrets past the window and usage to prune (every
# replica does; the work is idempotent and the rows are taken with SKIP LOCKED).
MAINTENANCE_INTERVAL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class DeletedSecret:
    """A secret in the trash, as an editor may see it: never a value."""

    deleted_id: int
    key: str
    scope: Scope
    display_name: str
    description: str
    version: int
    restricted: bool
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    deleted_at: datetime
    deleted_by: str
    purge_at: datetime
    versions: int


@dataclass(frozen=True, slots=True)
class DeletedListing:
    workspace: list[DeletedSecret]
    personal: list[DeletedSecret]


@dataclass(frozen=True, slots=True)
class Restored:
    key: str
    scope: Scope
    revision: int


T = TypeVar("T")


def _require_deleted_id(deleted_id: int) -> None:
    if deleted_id <= 0:
        raise InvalidArgument(
            "deleted_id must be the id of a deleted secret (ListDeletedSecrets)",
            [FieldViolation("deleted_id", "must be > 0")],
        )


def _owner(scope: Scope, workspace_id: str, caller: Caller) -> str:
    return workspace_id if scope is Scope.WORKSPACE else caller.user_id


class TrashService:
    def __init__(self, db: Database, changes: Changes, window_days: int = 30) -> None:
        self._db = db
        self._changes = changes
        self.window_days = window_days

    def _view(self, row: trash_store.DeletedRow) -> DeletedSecret:
        return DeletedSecret(
            row.id,
            row.key,
            row.scope,
            row.display_name,
            row.description,
            row.version,
            row.restricted,
            row.expires_at,
            row.created_at,
            row.created_by,
            row.updated_at,
            row.updated_by,
            row.deleted_at,
            row.deleted_by,
            row.deleted_at + timedelta(days=self.window_days),
            row.versions,
        )

    @audit_refusals("secrets.trash.list", (PermissionDenied,))
    async def list_deleted(self, caller: Caller, workspace_id: str) -> DeletedListing:
        """The workspace's deleted secrets (for its members) and the caller's own deleted
        personal secrets, most recently deleted first."""
        require_id("workspace_id", workspace_id)
        async with self._db.connection() as conn:
            policy.require_member(
                await repo.permission_of(conn, workspace_id, caller.user_id), caller.user_id, workspace_id
            )
            workspace = await trash_store.list_deleted(
                conn, Scope.WORKSPACE, workspace_id, caller.user_id, self.window_days
            )
            personal = await trash_store.list_deleted(
                conn, Scope.PERSONAL, caller.user_id, caller.user_id, self.window_days
            )
        return DeletedListing([self._view(r) for r in workspace], [self._view(r) for r in personal])

    async def _find(
        self, conn: asyncpg.Connection, caller: Caller, workspace_id: str, scope: Scope, deleted_id: int
    ) -> tuple[trash_store.DeletedRow, Permission | None]:
        permission = await repo.permission_of(conn, workspace_id, caller.user_id)
        if scope is Scope.WORKSPACE:
            policy.require_member(permission, caller.user_id, workspace_id)
        row = await trash_store.get_deleted(
            conn, scope, _owner(scope, workspace_id, caller), deleted_id, caller.user_id, self.window_days
        )
        if row is None:
            where = f"workspace {workspace_id!r}" if scope is Scope.WORKSPACE else "your personal secrets"
            raise NotFound(f"no deleted secret {deleted_id} in the trash of {where}")
        return row, permission

    @audit_refusals("secret.trash.restore", (PermissionDenied,))
    async def restore(self, caller: Caller, workspace_id: str, scope: Scope, deleted_id: int) -> Restored:
        """Restores a deleted secret whole (key, details, members still in the workspace, every
        kept version) under its own id. Needs what deleting it needed: workspace ADMIN or the
        secret's own ADMIN role for a workspace secret; the owner for a personal one. Refused
        with ALREADY_EXISTS when a secret of the same key was created since."""
        require_id("workspace_id", workspace_id)
        _require_deleted_id(deleted_id)
        owner = _owner(scope, workspace_id, caller)
        async with self._changes.transaction(scope_tag(scope, owner)) as conn:
            # Lock order as in saves: the scope's revision row first, then secret rows.
            revision = await repo.lock_revision(conn, scope, owner)
            row, permission = await self._find(conn, caller, workspace_id, scope, deleted_id)
            if scope is Scope.WORKSPACE:
                policy.require_modify(permission, row.caller_role, caller.user_id, workspace_id, row.key, "restoring")
            if await repo.get_secret(conn, scope, owner, row.key, caller.user_id, for_update=True) is not None:
                raise AlreadyExists(
                    f"secret {row.key!r} was created again since it was deleted; delete or rename that one "
                    "before restoring this one"
                )
            if not await trash_store.restore(conn, row.id, caller.user_id, workspace_id):
                raise FailedPrecondition(f"the deleted secret {deleted_id} has lost its current version")
            await repo.set_revision(conn, scope, owner, revision + 1)
            await repo.insert_audit(
                conn,
                audit_record(
                    caller,
                    workspace_id,
                    "secret.trash.restore",
                    keys=[(row.key, int(scope), row.version)],
                    detail=f"restored deleted secret {row.id} with {row.versions} kept version(s)",
                ),
            )
        return Restored(row.key, scope, revision + 1)

    @audit_refusals("secret.trash.purge", (PermissionDenied,))
    async def purge(self, caller: Caller, workspace_id: str, scope: Scope, deleted_id: int) -> None:
        """Deletes a deleted secret for good, at once: its sealed versions, members and usage.
        A workspace secret needs workspace ADMIN; a personal one, its owner."""
        require_id("workspace_id", workspace_id)
        _require_deleted_id(deleted_id)
        async with self._db.transaction() as conn:
            row, permission = await self._find(conn, caller, workspace_id, scope, deleted_id)
            if scope is Scope.WORKSPACE and permission is not Permission.ADMIN:
                raise PermissionDenied(
                    f"purging deleted workspace secret {row.key!r} needs workspace ADMIN permission in workspace "
                    f"{workspace_id!r}"
                )
            await trash_store.purge(conn, [row.id])
            await repo.insert_audit(
                conn,
                audit_record(
                    caller,
                    workspace_id,
                    "secret.trash.purge",
                    keys=[(row.key, int(scope), row.version)],
                    detail=f"purged deleted secret {row.id}",
                ),
            )


async def purge_past_window(db: Database, window_days: int) -> int:
    """Purges every deleted secret kept longer than `window_days`, PURGE_BATCH per transaction,
    each audited (principal "service", action secret.trash.purge)."""
    purged = 0
    while True:
        async with db.transaction() as conn:
            ids = await trash_store.past_window(conn, window_days, PURGE_BATCH)
            gone = await trash_store.purge(conn, ids)
            for p in gone:
                await repo.insert_audit(
                    conn,
                    repo.AuditRecord(
                        principal="service",
                        action="secret.trash.purge",
                        outcome="ok",
                        user_id=p.owner_id if p.scope is Scope.PERSONAL else "",
                        workspace_id=p.owner_id if p.scope is Scope.WORKSPACE else "",
                        keys=((p.key, int(p.scope), p.version),),
                        detail=f"purged deleted secret {p.id}: kept {window_days} days",
                    ),
                )
        purged += len(gone)
        if len(ids) < PURGE_BATCH:
            return purged


async def maintain(db: Database, trash_days: int, interval: float = MAINTENANCE_INTERVAL_SECONDS) -> None:
    """Forever: purge the trash past its window and prune usage, every `interval` seconds (with
    jitter, so replicas spread out). A failed round is logged and tried again the next time."""
    await asyncio.sleep(random.uniform(1.0, min(interval, 30.0)))
    while True:
        try:
            purged = await purge_past_window(db, trash_days)
            pruned = await prune_usage(db)
            if purged or pruned:
                log.info("maintenance: %d deleted secrets purged, %d usage rows pruned", purged, pruned)
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE_ERRORS:
            log.warning("maintenance skipped: the database is unavailable")
        except Exception as exc:
            log.error("maintenance failed: %s", type(exc).__name__)
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
