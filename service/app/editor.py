"""The editor's use cases (SecretStore): list and save; no result ever carries a value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from service.app.context import Caller
from service.app.keys import DataKeys
from service.crypto.envelope import DataKey, seal
from service.domain import batch, policy
from service.domain.errors import InvalidArgument, RevisionConflict
from service.domain.keys import id_problem
from service.domain.model import Scope, SecretRole, Tenant
from service.store import repository as repo
from service.store.db import Database


def require_id(what: str, value: str) -> None:
    problem = id_problem(what, value)
    if problem:
        raise InvalidArgument(problem)


@dataclass(frozen=True, slots=True)
class Listing:
    workspace: list[repo.SecretRow]
    personal: list[repo.SecretRow]
    # Personal keys that a workspace key of the same name hides at run time.
    shadowed: frozenset[str]
    workspace_revision: int
    personal_revision: int


@dataclass(frozen=True, slots=True)
class SaveResult:
    revision: int
    ops: list[batch.Op]


def owner_of(scope: Scope, workspace_id: str, caller: Caller) -> str:
    return workspace_id if scope is Scope.WORKSPACE else caller.user_id


class EditorService:
    def __init__(self, db: Database, keys: DataKeys) -> None:
        self._db = db
        self._keys = keys

    async def list_secrets(self, caller: Caller, workspace_id: str) -> Listing:
        require_id("workspace_id", workspace_id)
        async with self._db.connection() as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
            policy.require_member(permission, caller.user_id, workspace_id)
            workspace = await repo.list_secrets(conn, Scope.WORKSPACE, workspace_id, caller.user_id)
            personal = await repo.list_secrets(conn, Scope.PERSONAL, caller.user_id, caller.user_id)
            w_rev, p_rev = await repo.revisions(conn, workspace_id, caller.user_id)
        workspace_keys = {s.key for s in workspace}
        shadowed = frozenset(s.key for s in personal if s.key in workspace_keys)
        return Listing(workspace, personal, shadowed, w_rev, p_rev)

    async def save_secrets(
        self, caller: Caller, workspace_id: str, scope: Scope, expected_revision: int, changes: Sequence[batch.Change]
    ) -> SaveResult:
        require_id("workspace_id", workspace_id)
        batch.validate_changes(changes)
        owner = owner_of(scope, workspace_id, caller)
        data_key = await self._keys.for_sealing(Tenant.for_scope(scope, owner))
        async with self._db.transaction() as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
            if scope is Scope.WORKSPACE:
                policy.require_member(permission, caller.user_id, workspace_id)
            revision = await repo.lock_revision(conn, scope, owner)
            if revision != expected_revision:
                raise RevisionConflict(expected_revision, revision)
            stored = await repo.lock_secrets(conn, scope, owner, batch.touched_keys(changes), caller.user_id)
            existing = {k: batch.Existing(k, s.version, s.caller_role) for k, s in stored.items()}
            ops = batch.plan_changes(scope, changes, existing, permission, caller.user_id, workspace_id)
            await self._apply(conn, scope, owner, data_key, caller, ops, stored)
            await repo.set_revision(conn, scope, owner, revision + 1)
            await repo.insert_audit(
                conn,
                repo.AuditRecord(
                    principal=caller.principal,
                    user_id=caller.user_id,
                    workspace_id=workspace_id,
                    action="secrets.save",
                    outcome="ok",
                    keys=tuple((op.new_key or op.key, int(scope), op.version) for op in ops),
                    detail=", ".join(f"{op.key}: {op.kind.value}" for op in ops),
                ),
            )
        return SaveResult(revision + 1, ops)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        scope: Scope,
        owner: str,
        data_key: DataKey,
        caller: Caller,
        ops: list[batch.Op],
        stored: dict[str, repo.SecretRow],
    ) -> None:
        user = caller.user_id
        await repo.delete_secrets(conn, [stored[op.key].id for op in ops if op.kind is batch.OpKind.DELETE])
        for op in ops:
            if op.kind is batch.OpKind.RENAME:
                assert op.new_key is not None
                await self._rename(conn, scope, data_key, user, stored[op.key], op.new_key)
        creates = [
            repo.NewSecret(op.key, seal(data_key, scope, op.key, 1, op.value))
            for op in ops
            if op.kind is batch.OpKind.CREATE and op.value is not None
        ]
        ids = await repo.insert_secrets(conn, scope, owner, user, creates)
        if scope is Scope.WORKSPACE and ids:
            # SPEC 2.2: the creator of a workspace secret becomes its ADMIN.
            await repo.add_secret_members(conn, ids.values(), user, SecretRole.ADMIN, user)
        updates = [
            repo.NewVersion(stored[op.key].id, op.version, seal(data_key, scope, op.key, op.version, op.value))
            for op in ops
            if op.kind is batch.OpKind.UPDATE and op.value is not None
        ]
        await repo.add_versions(conn, user, updates, keep=batch.VERSIONS_KEPT)

    async def _rename(
        self, conn: asyncpg.Connection, scope: Scope, data_key: DataKey, user: str, row: repo.SecretRow, new_key: str
    ) -> None:
        # Values are bound to their key, so every kept version is opened under the old key and
        # sealed again under the new one.
        tenant = data_key.tenant
        resealed: list[tuple[int, bytes]] = []
        for version in await repo.versions_of(conn, row.id, with_sealed=True):
            value = await self._keys.open(tenant, scope, row.key, version.version, version.sealed)
            resealed.append((version.version, seal(data_key, scope, new_key, version.version, value)))
        current = await self._keys.open(tenant, scope, row.key, row.version, row.sealed)
        await repo.rename_secret(
            conn, row.id, new_key, user, seal(data_key, scope, new_key, row.version, current), resealed
        )
