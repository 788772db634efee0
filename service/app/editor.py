"""The editor's use cases (SecretStore). No result of this module ever carries a value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg

from service.app import listings
from service.app.audit import audit_record, audit_refusals
from service.app.cache import scope_tag, workspace_tag
from service.app.changes import Changes
from service.app.context import Caller
from service.app.keys import DataKeys
from service.app.results import Explained, SecretSummary, VersionInfo, summary_of, version_of
from service.app.usage import check_in_use
from service.crypto.envelope import DataKey, seal
from service.domain import batch, policy
from service.domain.dotenv import DotenvResult, parse_dotenv
from service.domain.errors import (
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RevisionConflict,
)
from service.domain.keys import key_problem, require_email, require_id
from service.domain.limits import (
    MAX_DESCRIPTION_LENGTH,
    MAX_DISPLAY_NAME_LENGTH,
    MAX_IMPORT_ENTRIES,
    MAX_MESSAGE_BYTES,
    VERSIONS_KEPT,
)
from service.domain.model import Permission, Scope, SecretRole, Tenant, Trigger
from service.domain.resolution import (
    decide_all,
    explained_version,
    explanation,
    run_user_to_explain,
)
from service.domain.usage import MAX_USAGE_LISTED, WorkflowUse
from service.store import expiry as expiry_store
from service.store import repository as repo
from service.store import trash as trash_store
from service.store import usage as usage_store
from service.store.pool import Database

log = logging.getLogger(__name__)


def require_key(key: str, field: str = "key") -> None:
    problem = key_problem(key)
    if problem:
        raise InvalidArgument(f"{field}: {problem}", [FieldViolation(field, problem)])


def owner_of(scope: Scope, workspace_id: str, caller: Caller) -> str:
    return workspace_id if scope is Scope.WORKSPACE else caller.user_id


@dataclass(frozen=True, slots=True)
class Listing:
    workspace: list[SecretSummary]
    personal: list[SecretSummary]
    # Personal keys that a workspace key of the same name hides at run time.
    shadowed: frozenset[str]
    workspace_revision: int
    personal_revision: int
    # Empty on the last page.
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class SaveResult:
    revision: int
    ops: list[batch.Op]


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: str
    email: str
    role: SecretRole
    implicit: bool


@dataclass(frozen=True, slots=True)
class Details:
    secret: SecretSummary
    members: list[MemberView]
    versions: list[VersionInfo]
    # The workflows that used the secret, most recent first (issue 13; app/usage.py).
    usage: tuple[WorkflowUse, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    entries: list[batch.ImportLine]
    problems: list[tuple[int, str]]
    revision: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Referenceable:
    workspace: list[SecretSummary]
    personal: list[SecretSummary]
    shadowed: frozenset[str]
    next_page_token: str = ""


T = TypeVar("T")


# What the editor's use cases audit when refused: no permission, a stale revision, a value that
# failed authentication.
_REFUSED = (PermissionDenied, RevisionConflict, DataLoss)


class EditorService:
    def __init__(self, db: Database, keys: DataKeys, changes: Changes, in_use_days: int = 30) -> None:
        self._db = db
        self._keys = keys
        self._changes = changes
        self._parse_slots = asyncio.Semaphore(PARSE_SLOTS)
        # The in-use guard's window (Settings.in_use_days; app/usage.py check_in_use).
        self.in_use_days = in_use_days

    async def _sealing_key(self, caller: Caller, workspace_id: str, scope: Scope, owner: str) -> DataKey:
        """The data key to seal with. A workspace's key is created on its first save, so a
        caller who is not a member is turned away first: a refused request must not leave a
        data key behind for a workspace id it made up."""
        tenant = Tenant.for_scope(scope, owner)
        if scope is Scope.WORKSPACE and not self._keys.has(tenant):
            async with self._db.connection() as conn:
                permission = await repo.permission_of(conn, workspace_id, caller.user_id)
            policy.require_member(permission, caller.user_id, workspace_id)
        return await self._keys.for_sealing(tenant)

    # -- listing -------------------------------------------------------------------------------

    @audit_refusals("secrets.list", _REFUSED)
    async def list_secrets(
        self,
        caller: Caller,
        workspace_id: str,
        page_size: int = 0,
        page_token: str = "",
        expiring_within: timedelta | None = None,
    ) -> Listing:
        """One page of the workspace's secrets then the caller's personal ones (app/listings.py);
        with `expiring_within`, only those that expire within it (the expired included)."""
        page = await listings.secrets_page(
            self._db, caller, workspace_id, page_size, page_token, expiring_within=expiring_within
        )
        async with self._db.connection() as conn:
            used = await usage_store.last_used(conn, [s.id for s in (*page.workspace, *page.personal)])
        return Listing(
            [summary_of(s, used.get(s.id)) for s in page.workspace],
            [summary_of(s, used.get(s.id)) for s in page.personal],
            page.shadowed,
            page.workspace_revision,
            page.personal_revision,
            page.next_page_token,
        )

    @audit_refusals("secrets.referenceable", _REFUSED)
    async def list_referenceable(
        self, caller: Caller, workspace_id: str, prefix: str, page_size: int = 0, page_token: str = ""
    ) -> Referenceable:
        """The keys a run by the caller could use here: usable workspace keys first, then the
        caller's personal keys, those hidden by a usable workspace key marked as shadowed; paged."""
        page = await listings.secrets_page(
            self._db, caller, workspace_id, page_size, page_token, referenceable_prefix=prefix
        )
        return Referenceable(
            [summary_of(s) for s in page.workspace],
            [summary_of(s) for s in page.personal],
            page.shadowed,
            page.next_page_token,
        )

    # -- saving --------------------------------------------------------------------------------

    @audit_refusals("secrets.save", _REFUSED)
    async def save_secrets(
        self,
        caller: Caller,
        workspace_id: str,
        scope: Scope,
        expected_revision: int,
        changes: Sequence[batch.Change],
        acknowledge_in_use: bool = False,
    ) -> SaveResult:
        require_id("workspace_id", workspace_id)
        # The changes are logged as they are: their values are SecretValues, which print as ***.
        log.debug("save in %s (%s) at revision %d: %s", workspace_id, scope.name, expected_revision, list(changes))
        batch.validate_changes(changes)
        owner = owner_of(scope, workspace_id, caller)
        data_key = await self._sealing_key(caller, workspace_id, scope, owner)
        async with self._changes.transaction(scope_tag(scope, owner)) as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
            if scope is Scope.WORKSPACE:
                policy.require_member(permission, caller.user_id, workspace_id)
            revision = await repo.lock_revision(conn, scope, owner)
            if revision != expected_revision:
                raise RevisionConflict(expected_revision, revision)
            data_key = await self._keys.confirm_sealing(conn, data_key)  # a data-key rotation may have run
            stored = await repo.secrets_named(
                conn, scope, owner, batch.touched_keys(changes), caller.user_id, for_update=True
            )
            existing = {k: batch.Existing(k, s.version, s.caller_role) for k, s in stored.items()}
            ops = batch.plan_changes(scope, changes, existing, permission, caller.user_id, workspace_id)
            if not acknowledge_in_use:
                # Deleting or renaming what workflows use breaks their runs (app/usage.py).
                await check_in_use(conn, scope, ops, stored, self.in_use_days)
            await self._apply(conn, scope, owner, data_key, caller, ops, stored)
            await repo.set_revision(conn, scope, owner, revision + 1)
            await repo.insert_audit(
                conn,
                audit_record(
                    caller,
                    workspace_id,
                    "secrets.save",
                    keys=[(op.new_key or op.key, int(scope), op.version) for op in ops],
                    detail=", ".join(f"{op.key}: {op.kind.value}" for op in ops),
                ),
            )
        return SaveResult(revision + 1, ops)

    @audit_refusals("secrets.import", _REFUSED)
    async def import_dotenv(
        self,
        caller: Caller,
        workspace_id: str,
        scope: Scope,
        content: str,
        dry_run: bool,
        overwrite_existing: bool,
        expected_revision: int,
    ) -> ImportResult:
        require_id("workspace_id", workspace_id)
        # Membership first: the parse is the costly part of an import, and a caller who may not
        # import here must not be able to spend it (SPEC: nothing costly before authorisation).
        async with self._db.connection() as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
        policy.require_member(permission, caller.user_id, workspace_id)
        parsed = await _parse_off_loop(content, self._parse_slots)
        log.debug(
            "import into %s (%s): %d entries, %d problems",
            workspace_id,
            scope.name,
            len(parsed.entries),
            len(parsed.problems),
        )
        problems = [(p.line, p.message) for p in parsed.problems]
        if len(parsed.entries) > MAX_IMPORT_ENTRIES:
            raise ResourceExhausted(
                f"an import may hold at most {MAX_IMPORT_ENTRIES} keys, got {len(parsed.entries)}; split the file"
            )
        owner = owner_of(scope, workspace_id, caller)
        data_key = await self._sealing_key(caller, workspace_id, scope, owner)
        async with self._changes.transaction(scope_tag(scope, owner)) as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
            workspace = scope is Scope.WORKSPACE
            policy.require_member(permission, caller.user_id, workspace_id)
            revision = await repo.lock_revision(conn, scope, owner) if not dry_run else None
            if revision is not None and revision != expected_revision:
                raise RevisionConflict(expected_revision, revision)
            if revision is not None:
                data_key = await self._keys.confirm_sealing(conn, data_key)  # a data-key rotation may have run
            stored = await repo.secrets_named(
                conn, scope, owner, [e.key for e in parsed.entries], caller.user_id, for_update=not dry_run
            )
            existing = {k: batch.Existing(k, s.version, s.caller_role) for k, s in stored.items()}
            imported = {e.key: e.value for e in parsed.entries}
            unchanged: set[str] = set()
            for key in batch.import_comparisons(scope, parsed.entries, existing, permission):
                current = stored[key]
                stored_value = await self._keys.open(
                    data_key.tenant, scope, current.key, current.version, current.id, current.sealed
                )
                if stored_value == imported[key]:
                    unchanged.add(key)
            lines, ops = batch.plan_import(
                scope,
                parsed.entries,
                existing,
                frozenset(unchanged),
                permission,
                caller.user_id,
                workspace_id,
                overwrite_existing,
            )
            # Before anything is written: a report that cannot be sent would tell the editor that
            # an import failed when it had been committed.
            report = _report_bytes(lines, problems)
            if report > MAX_MESSAGE_BYTES:
                raise ResourceExhausted(
                    f"the import's report would take about {report:,} bytes, over the {MAX_MESSAGE_BYTES:,} bytes "
                    "that one response may hold; nothing was imported; split the file"
                )
            written = "would be written" if dry_run else "written"
            # A dry run changes no secret, but it is audited like a real import: it is how an
            # editor learns which keys exist and which values are unchanged.
            record = audit_record(
                caller,
                workspace_id,
                "secrets.import",
                outcome="dry_run" if dry_run else "ok",
                keys=[(op.key, int(scope), op.version) for op in ops],
                detail=f"{'dry run: ' if dry_run else ''}{len(ops)} {written}, {len(lines) - len(ops)} not written, "
                f"{len(problems)} problem lines",
            )
            if dry_run:
                await repo.insert_audit(conn, record)
                w_rev, p_rev = await repo.revisions(conn, workspace_id, caller.user_id)
                return ImportResult(lines, problems, w_rev if workspace else p_rev, True)
            assert revision is not None
            if ops:
                await self._apply(conn, scope, owner, data_key, caller, ops, stored)
                revision += 1
                await repo.set_revision(conn, scope, owner, revision)
            await repo.insert_audit(conn, record)
        return ImportResult(lines, problems, revision, False)

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
        # Deleted secrets go to the trash, whole and sealed, under their own ids (app/trash.py).
        await trash_store.move_to_trash(conn, [stored[op.key].id for op in ops if op.kind is batch.OpKind.DELETE], user)
        for op in ops:
            if op.kind is batch.OpKind.RENAME:
                assert op.new_key is not None
                await self._rename(conn, scope, data_key, user, stored[op.key], op.new_key)
        new_values = [(op.key, op.value) for op in ops if op.kind is batch.OpKind.CREATE and op.value is not None]
        new_ids = await repo.allocate_secret_ids(conn, len(new_values))
        creates = [
            repo.NewSecret(secret_id, key, seal(data_key, scope, key, 1, secret_id, value))
            for secret_id, (key, value) in zip(new_ids, new_values, strict=True)
        ]
        ids = await repo.insert_secrets(conn, scope, owner, user, creates)
        if scope is Scope.WORKSPACE and ids:
            await repo.add_secret_members(conn, ids, user, policy.CREATOR_ROLE, user)
        updates = [
            repo.NewVersion(
                stored[op.key].id,
                op.version,
                seal(data_key, scope, op.key, op.version, stored[op.key].id, op.value),
            )
            for op in ops
            if op.kind is batch.OpKind.UPDATE and op.value is not None
        ]
        await repo.add_versions(conn, user, updates, keep=VERSIONS_KEPT)

    async def _rename(
        self, conn: asyncpg.Connection, scope: Scope, data_key: DataKey, user: str, row: repo.SecretRow, new_key: str
    ) -> None:
        # Values are bound to their key, so every kept version is opened under the old key and
        # sealed again under the new one.
        tenant = data_key.tenant
        resealed: list[tuple[int, bytes]] = []
        for version in await repo.versions_of(conn, row.id, with_sealed=True):
            value = await self._keys.open(tenant, scope, row.key, version.version, row.id, version.sealed)
            resealed.append((version.version, seal(data_key, scope, new_key, version.version, row.id, value)))
        current = await self._keys.open(tenant, scope, row.key, row.version, row.id, row.sealed)
        await repo.rename_secret(
            conn, row.id, new_key, user, seal(data_key, scope, new_key, row.version, row.id, current), resealed
        )

    # -- one secret ----------------------------------------------------------------------------

    async def _find(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        workspace_id: str,
        scope: Scope,
        key: str,
        for_update: bool = False,
    ) -> tuple[repo.SecretRow, Permission | None]:
        require_id("workspace_id", workspace_id)
        require_key(key)
        permission = await repo.permission_of(conn, workspace_id, caller.user_id)
        if scope is Scope.WORKSPACE:
            policy.require_member(permission, caller.user_id, workspace_id)
        row = await repo.get_secret(
            conn, scope, owner_of(scope, workspace_id, caller), key, caller.user_id, for_update=for_update
        )
        if row is None:
            where = f"workspace {workspace_id!r}" if scope is Scope.WORKSPACE else "your personal secrets"
            raise NotFound(f"secret {key!r} does not exist in {where}")
        return row, permission

    async def _details(self, conn: asyncpg.Connection, row: repo.SecretRow, workspace_id: str) -> Details:
        members: list[MemberView] = []
        if row.scope is Scope.WORKSPACE:
            members = [
                MemberView(
                    m.user_id,
                    m.email,
                    # An explicit member no longer in the workspace (a removal raced a role
                    # change) keeps the role stored for them; only implicit admins have none.
                    policy.effective_role(m.workspace_permission, m.role) or m.role or SecretRole.MEMBER,
                    policy.is_implicit_admin(m.workspace_permission),
                )
                for m in await repo.secret_members(conn, row.id, workspace_id, policy.IMPLICIT_ADMIN_PERMISSION)
            ]
        versions = [version_of(v) for v in await repo.versions_of(conn, row.id)]
        usage = tuple(await usage_store.usage_of(conn, row.id, MAX_USAGE_LISTED))
        return Details(summary_of(row, usage[0].last_used_at if usage else None), members, versions, usage)

    @audit_refusals("secret.get", _REFUSED)
    async def get_secret(self, caller: Caller, workspace_id: str, scope: Scope, key: str) -> Details:
        async with self._db.connection() as conn:
            row, _ = await self._find(conn, caller, workspace_id, scope, key)
            return await self._details(conn, row, workspace_id)

    def _require_admin(
        self, caller: Caller, workspace_id: str, row: repo.SecretRow, permission: Permission | None, action: str
    ) -> None:
        if row.scope is Scope.WORKSPACE:
            policy.require_modify(permission, row.caller_role, caller.user_id, workspace_id, row.key, action)

    @audit_refusals("secret.details", _REFUSED)
    async def update_details(
        self,
        caller: Caller,
        workspace_id: str,
        scope: Scope,
        key: str,
        display_name: str | None,
        description: str | None,
        restricted: bool | None,
        expires_at: datetime | None = None,
        clear_expires_at: bool = False,
    ) -> Details:
        violations = []
        if expires_at is not None and clear_expires_at:
            violations.append(FieldViolation("clear_expires_at", "cannot be set together with expires_at"))
        if expires_at is not None and not expiry_store.storable(expires_at):
            violations.append(FieldViolation("expires_at", f"must be {expiry_store.STORABLE_RANGE}"))
        if display_name is not None and len(display_name) > MAX_DISPLAY_NAME_LENGTH:
            violations.append(FieldViolation("display_name", f"longer than {MAX_DISPLAY_NAME_LENGTH} characters"))
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            violations.append(FieldViolation("description", f"longer than {MAX_DESCRIPTION_LENGTH} characters"))
        if restricted is not None and scope is Scope.PERSONAL:
            violations.append(
                FieldViolation(
                    "restricted", "personal secrets are private already; only workspace secrets can be restricted"
                )
            )
        for field, text in (("display_name", display_name), ("description", description)):
            if text is not None and "\x00" in text:
                violations.append(FieldViolation(field, "contains a NUL character"))
        if violations:
            raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in violations), violations)
        async with self._changes.transaction(scope_tag(scope, owner_of(scope, workspace_id, caller))) as conn:
            row, permission = await self._find(conn, caller, workspace_id, scope, key, for_update=True)
            self._require_admin(caller, workspace_id, row, permission, "editing details of")
            await repo.update_details(conn, row.id, caller.user_id, display_name, description, restricted)
            changed = [
                n
                for n, v in (("display_name", display_name), ("description", description), ("restricted", restricted))
                if v is not None
            ]
            if expires_at is not None or clear_expires_at:
                # Issue 13: past it, runs that would use the secret fail their block SECRET_EXPIRED.
                await expiry_store.set_expiry(conn, row.id, expires_at)
                changed.append("expires_at")
            await repo.insert_audit(
                conn,
                audit_record(
                    caller,
                    workspace_id,
                    "secret.details",
                    keys=[(key, int(scope), row.version)],
                    detail="changed " + ", ".join(changed),
                ),
            )
            fresh = await repo.get_secret(conn, scope, row.owner_id, key, caller.user_id)
            assert fresh is not None
            return await self._details(conn, fresh, workspace_id)

    async def _member_target(self, conn: asyncpg.Connection, workspace_id: str, email: str) -> repo.MemberRow:
        email = require_email(email)
        target = await repo.member_with_email(conn, workspace_id, email)
        if target is None:
            raise NotFound(f"no member of workspace {workspace_id!r} has email {email!r}")
        return target

    async def _member_change(
        self, conn: asyncpg.Connection, caller: Caller, workspace_id: str, key: str, email: str
    ) -> tuple[repo.SecretRow, repo.MemberRow]:
        """The secret (locked) and the workspace member whose role on it is changing."""
        row, permission = await self._find(conn, caller, workspace_id, Scope.WORKSPACE, key, for_update=True)
        policy.require_manage_members(permission, row.caller_role, key)
        return row, await self._member_target(conn, workspace_id, email)

    @audit_refusals("secret.member.set", _REFUSED)
    async def set_member(self, caller: Caller, workspace_id: str, key: str, email: str, role: SecretRole) -> Details:
        async with self._changes.transaction(workspace_tag(workspace_id)) as conn:
            row, target = await self._member_change(conn, caller, workspace_id, key, email)
            policy.require_may_take_role(target.permission, role, target.email)
            await repo.add_secret_members(conn, [row.id], target.user_id, role, caller.user_id)
            detail = f"{target.user_id}: {role.name}"
            record = audit_record(
                caller, workspace_id, "secret.member.set", keys=[(key, 1, row.version)], detail=detail
            )
            await repo.insert_audit(conn, record)
            return await self._details(conn, row, workspace_id)

    @audit_refusals("secret.member.remove", _REFUSED)
    async def remove_member(self, caller: Caller, workspace_id: str, key: str, email: str) -> Details:
        async with self._changes.transaction(workspace_tag(workspace_id)) as conn:
            row, target = await self._member_change(conn, caller, workspace_id, key, email)
            policy.require_may_take_role(target.permission, None, target.email)
            if not await repo.remove_secret_member(conn, row.id, target.user_id):
                raise NotFound(f"{target.email} is not a member of secret {key!r}")
            detail = target.user_id
            record = audit_record(
                caller, workspace_id, "secret.member.remove", keys=[(key, 1, row.version)], detail=detail
            )
            await repo.insert_audit(conn, record)
            return await self._details(conn, row, workspace_id)

    @audit_refusals("secret.restore", _REFUSED)
    async def restore_version(self, caller: Caller, workspace_id: str, scope: Scope, key: str, version: int) -> Details:
        require_id("workspace_id", workspace_id)
        require_key(key)
        if version <= 0:
            raise InvalidArgument(
                "version must be a positive version number", [FieldViolation("version", "must be > 0")]
            )
        owner = owner_of(scope, workspace_id, caller)
        data_key = await self._sealing_key(caller, workspace_id, scope, owner)
        async with self._changes.transaction(scope_tag(scope, owner)) as conn:
            # Lock order, the same in every transaction that takes both: the scope's revision row
            # first, then secret rows. Taking them the other way round deadlocked with saves.
            revision = await repo.lock_revision(conn, scope, owner)
            data_key = await self._keys.confirm_sealing(conn, data_key)  # a data-key rotation may have run
            row, permission = await self._find(conn, caller, workspace_id, scope, key, for_update=True)
            self._require_admin(caller, workspace_id, row, permission, "restoring a version of")
            if version == row.version:
                raise FailedPrecondition(f"version {version} of {key!r} is already the current one")
            kept = {v.version: v for v in await repo.versions_of(conn, row.id, with_sealed=True)}
            old = kept.get(version)
            if old is None:
                raise NotFound(
                    f"version {version} of {key!r} is not kept; kept versions: {', '.join(map(str, sorted(kept)))}"
                )
            value = await self._keys.open(data_key.tenant, scope, key, version, row.id, old.sealed)
            new_version = row.version + 1
            await repo.add_versions(
                conn,
                caller.user_id,
                [
                    repo.NewVersion(
                        row.id,
                        new_version,
                        seal(data_key, scope, key, new_version, row.id, value),
                        restored_from=version,
                    )
                ],
                keep=VERSIONS_KEPT,
            )
            await repo.set_revision(conn, scope, owner, revision + 1)
            await repo.insert_audit(
                conn,
                audit_record(
                    caller,
                    workspace_id,
                    "secret.restore",
                    keys=[(key, int(scope), new_version)],
                    detail=f"restored version {version}",
                ),
            )
            fresh = await repo.get_secret(conn, scope, owner, key, caller.user_id)
            assert fresh is not None
            return await self._details(conn, fresh, workspace_id)

    # -- references ----------------------------------------------------------------------------

    @audit_refusals("references.explain", _REFUSED)
    async def explain(
        self,
        caller: Caller,
        workspace_id: str,
        trigger: Trigger | None,
        triggering_user_id: str,
        workflow_owner_id: str,
        find_keys: Callable[[], tuple[T, list[str]]],
    ) -> tuple[str, T, dict[str, Explained]]:
        """The run user, and what a run of theirs would use for each key that `find_keys` finds;
        values are never opened. `find_keys` (the walk of the request's inputs) runs only once the
        caller is known to be allowed to ask: the walk is the costly part."""
        require_id("workspace_id", workspace_id)
        run_user_id = run_user_to_explain(trigger, triggering_user_id, workflow_owner_id, caller.user_id)
        async with self._db.connection() as conn:
            permission = await repo.permission_of(conn, workspace_id, caller.user_id)
        policy.require_explain(permission, caller.user_id, run_user_id, workspace_id)
        found, keys = find_keys()
        if not keys:
            return run_user_id, found, {}
        async with self._db.connection() as conn:
            snapshot = await repo.fetch_for_resolve(conn, workspace_id, run_user_id, keys)
        decisions = decide_all(keys, snapshot.permission, [row.candidate for row in snapshot.rows], time.time())
        return (
            run_user_id,
            found,
            {
                key: Explained(
                    d.chosen.scope if d.chosen is not None else None,
                    explained_version(d, run_user_id, caller.user_id),
                    d.error,
                    explanation(d, run_user_id, caller.user_id),
                )
                for key, d in decisions.items()
            },
        )


# Texts up to this size are parsed on the event loop (well under a millisecond); larger ones in a
# worker thread, so a 4 MiB import cannot stall health checks and resolves for its duration.
INLINE_PARSE_CHARS = 64 * 1024
# At most this many large parses at once: each holds its text and entries in memory.
PARSE_SLOTS = 2


async def _parse_off_loop(content: str, slots: asyncio.Semaphore) -> DotenvResult:
    if len(content) <= INLINE_PARSE_CHARS:
        return parse_dotenv(content)
    async with slots:
        return await asyncio.to_thread(parse_dotenv, content)


def _report_bytes(lines: Sequence[batch.ImportLine], problems: Sequence[tuple[int, str]]) -> int:
    """An upper bound of the size of an ImportDotenvResponse holding these entries and problems."""
    entries = sum(24 + len(line.key) + len(line.note.encode()) for line in lines)
    return 64 + entries + sum(16 + len(message.encode()) for _, message in problems)
