"""SQL for every table, as plain statements next to the functions that run them.

Every function takes the connection to run on, so the application layer decides what shares a
transaction. Nothing here sees plaintext: values arrive and leave sealed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service.domain.model import Permission, Scope, SecretRole, Tenant, TenantKind
from service.domain.resolution import Candidate

# ---------------------------------------------------------------------------------------------
# Workspace members


@dataclass(frozen=True, slots=True)
class MemberRow:
    workspace_id: str
    user_id: str
    email: str
    permission: Permission
    external: bool
    updated_at: datetime


def _member(r: asyncpg.Record) -> MemberRow:
    return MemberRow(
        r["workspace_id"], r["user_id"], r["email"], Permission(r["permission"]), r["external"], r["updated_at"]
    )


_PUT_MEMBER = """
INSERT INTO workspace_members (workspace_id, user_id, email, permission, external)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, user_id) DO UPDATE
   SET email = EXCLUDED.email, permission = EXCLUDED.permission, external = EXCLUDED.external,
       updated_at = now()
RETURNING workspace_id, user_id, email, permission, external, updated_at, (xmax = 0) AS created
"""


async def put_member(
    conn: asyncpg.Connection, workspace_id: str, user_id: str, email: str, permission: Permission, external: bool
) -> tuple[MemberRow, bool]:
    r = await conn.fetchrow(_PUT_MEMBER, workspace_id, user_id, email, int(permission), external)
    return _member(r), bool(r["created"])


async def member_with_email(conn: asyncpg.Connection, workspace_id: str, email: str) -> MemberRow | None:
    r = await conn.fetchrow(
        "SELECT workspace_id, user_id, email, permission, external, updated_at"
        " FROM workspace_members WHERE workspace_id = $1 AND email = $2",
        workspace_id,
        email,
    )
    return _member(r) if r else None


async def permission_of(conn: asyncpg.Connection, workspace_id: str, user_id: str) -> Permission | None:
    value = await conn.fetchval(
        "SELECT permission FROM workspace_members WHERE workspace_id = $1 AND user_id = $2", workspace_id, user_id
    )
    return Permission(value) if value is not None else None


async def remove_member(conn: asyncpg.Connection, workspace_id: str, user_id: str) -> tuple[bool, int]:
    """Removes a member and, in the same transaction, their memberships of the workspace's secrets."""
    removed_roles = await conn.fetchval(
        """
        WITH gone AS (
            DELETE FROM secret_members sm USING secrets s
             WHERE sm.secret_id = s.id AND s.scope = $3 AND s.owner_id = $1 AND sm.user_id = $2
            RETURNING 1)
        SELECT count(*) FROM gone
        """,
        workspace_id,
        user_id,
        int(Scope.WORKSPACE),
    )
    status = await conn.execute(
        "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2", workspace_id, user_id
    )
    return status.endswith(" 1"), int(removed_roles)


# ---------------------------------------------------------------------------------------------
# Data keys


@dataclass(frozen=True, slots=True)
class WrappedDataKey:
    tenant: Tenant
    generation: int
    master_key_id: str
    wrapped: bytes


def _wrapped_key(r: asyncpg.Record) -> WrappedDataKey:
    tenant = Tenant(TenantKind(r["tenant_kind"]), r["tenant_id"])
    return WrappedDataKey(tenant, r["generation"], r["master_key_id"], r["wrapped"])


_LATEST_DATA_KEY = """
SELECT generation, master_key_id, wrapped FROM data_keys
 WHERE tenant_kind = $1 AND tenant_id = $2 ORDER BY generation DESC LIMIT 1
"""


async def latest_data_key(conn: asyncpg.Connection, tenant: Tenant) -> WrappedDataKey | None:
    r = await conn.fetchrow(_LATEST_DATA_KEY, tenant.kind.value, tenant.id)
    return WrappedDataKey(tenant, r["generation"], r["master_key_id"], r["wrapped"]) if r else None


async def data_keys_for(conn: asyncpg.Connection, tenants: Sequence[Tenant]) -> list[WrappedDataKey]:
    rows = await conn.fetch(
        "SELECT tenant_kind, tenant_id, generation, master_key_id, wrapped FROM data_keys"
        " WHERE (tenant_kind, tenant_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        [t.kind.value for t in tenants],
        [t.id for t in tenants],
    )
    return [_wrapped_key(r) for r in rows]


async def insert_data_key_row(conn: asyncpg.Connection, key: WrappedDataKey) -> bool:
    """Inserts a data key generation; False when that generation exists already (a race lost)."""
    status = await conn.execute(
        "INSERT INTO data_keys (tenant_kind, tenant_id, generation, master_key_id, wrapped)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        key.tenant.kind.value,
        key.tenant.id,
        key.generation,
        key.master_key_id,
        key.wrapped,
    )
    return bool(status.endswith(" 1"))


async def insert_data_key(conn: asyncpg.Connection, key: WrappedDataKey) -> WrappedDataKey:
    """Inserts a new data key unless another process won the race; returns the one that is stored."""
    await insert_data_key_row(conn, key)
    stored = await latest_data_key(conn, key.tenant)
    assert stored is not None
    return stored


async def count_data_keys_by_master(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT master_key_id, count(*) AS n FROM data_keys GROUP BY master_key_id")
    return {r["master_key_id"]: int(r["n"]) for r in rows}


async def data_keys_not_under(conn: asyncpg.Connection, master_key_id: str, limit: int) -> list[WrappedDataKey]:
    rows = await conn.fetch(
        "SELECT tenant_kind, tenant_id, generation, master_key_id, wrapped FROM data_keys"
        " WHERE master_key_id <> $1 ORDER BY tenant_kind, tenant_id, generation LIMIT $2"
        " FOR UPDATE SKIP LOCKED",
        master_key_id,
        limit,
    )
    return [_wrapped_key(r) for r in rows]


async def rewrap_data_key(conn: asyncpg.Connection, key: WrappedDataKey, master_key_id: str, wrapped: bytes) -> None:
    await conn.execute(
        "UPDATE data_keys SET master_key_id = $4, wrapped = $5, rewrapped_at = now()"
        " WHERE tenant_kind = $1 AND tenant_id = $2 AND generation = $3",
        key.tenant.kind.value,
        key.tenant.id,
        key.generation,
        master_key_id,
        wrapped,
    )


# ---------------------------------------------------------------------------------------------
# Scope revisions


async def lock_revision(conn: asyncpg.Connection, scope: Scope, owner_id: str) -> int:
    """The scope's revision, with its row locked until the transaction ends."""
    await conn.execute(
        "INSERT INTO scope_revisions (scope, owner_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", int(scope), owner_id
    )
    return int(
        await conn.fetchval(
            "SELECT revision FROM scope_revisions WHERE scope = $1 AND owner_id = $2 FOR UPDATE", int(scope), owner_id
        )
    )


async def set_revision(conn: asyncpg.Connection, scope: Scope, owner_id: str, revision: int) -> None:
    await conn.execute(
        "UPDATE scope_revisions SET revision = $3 WHERE scope = $1 AND owner_id = $2", int(scope), owner_id, revision
    )


async def revisions(conn: asyncpg.Connection, workspace_id: str, user_id: str) -> tuple[int, int]:
    r = await conn.fetchrow(
        """
        SELECT coalesce((SELECT revision FROM scope_revisions WHERE scope = $3 AND owner_id = $1), 0) AS w,
               coalesce((SELECT revision FROM scope_revisions WHERE scope = $4 AND owner_id = $2), 0) AS p
        """,
        workspace_id,
        user_id,
        int(Scope.WORKSPACE),
        int(Scope.PERSONAL),
    )
    return int(r["w"]), int(r["p"])


# ---------------------------------------------------------------------------------------------
# Secrets


@dataclass(frozen=True, slots=True)
class SecretRow:
    id: int
    scope: Scope
    owner_id: str
    key: str
    version: int
    display_name: str
    description: str
    restricted: bool
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    # Only filled by queries that need them.
    sealed: bytes = b""
    caller_role: SecretRole | None = None
    expires_at: datetime | None = None

    @property
    def candidate(self) -> Candidate:
        """This secret as resolution sees it, for a run of the caller whose role was read."""
        expires = self.expires_at.timestamp() if self.expires_at is not None else None
        return Candidate(self.scope, self.key, self.version, self.restricted, self.caller_role, expires)


_ROW_COLUMNS = (
    "s.id, s.scope, s.owner_id, s.key, s.version, s.display_name, s.description, s.restricted,"
    " s.created_at, s.created_by, s.updated_at, s.updated_by, s.expires_at"
)


def _secret(r: asyncpg.Record) -> SecretRow:
    role = r.get("caller_role")
    return SecretRow(
        id=r["id"],
        scope=Scope(r["scope"]),
        owner_id=r["owner_id"],
        key=r["key"],
        version=r["version"],
        display_name=r["display_name"],
        description=r["description"],
        restricted=r["restricted"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        updated_at=r["updated_at"],
        updated_by=r["updated_by"],
        sealed=r.get("sealed") or b"",
        caller_role=SecretRole(role) if role is not None else None,
        expires_at=r["expires_at"],
    )


async def secrets_named(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, keys: Sequence[str], caller_id: str, *, for_update: bool
) -> dict[str, SecretRow]:
    """The named secrets (with sealed values and the caller's role); `for_update` locks their
    rows until the transaction ends (a dry run reads without holding anything)."""
    rows = await conn.fetch(
        f"SELECT {_ROW_COLUMNS}, s.sealed, sm.role AS caller_role FROM secrets s"
        " LEFT JOIN secret_members sm ON sm.secret_id = s.id AND sm.user_id = $4"
        " WHERE s.scope = $1 AND s.owner_id = $2 AND s.key = ANY($3::text[])"
        " ORDER BY s.key" + (" FOR UPDATE OF s" if for_update else ""),
        int(scope),
        owner_id,
        list(keys),
        caller_id,
    )
    return {r["key"]: _secret(r) for r in rows}


async def get_secret(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, key: str, caller_id: str, *, for_update: bool = False
) -> SecretRow | None:
    return (await secrets_named(conn, scope, owner_id, [key], caller_id, for_update=for_update)).get(key)


@dataclass(frozen=True, slots=True)
class SecretMemberRow:
    user_id: str
    email: str
    role: SecretRole | None  # None: a workspace member with `listed_permission` and no role of their own
    workspace_permission: Permission | None


async def secret_members(
    conn: asyncpg.Connection, secret_id: int, workspace_id: str, listed_permission: Permission
) -> list[SecretMemberRow]:
    """The secret's explicit members, and every workspace member with `listed_permission` (the
    domain's implicit admins: what that makes them is the domain's to say)."""
    rows = await conn.fetch(
        """
        SELECT sm.user_id, coalesce(m.email, '') AS email, sm.role, m.permission
          FROM secret_members sm
          LEFT JOIN workspace_members m ON m.workspace_id = $2 AND m.user_id = sm.user_id
         WHERE sm.secret_id = $1
        UNION ALL
        SELECT m.user_id, m.email, NULL AS role, m.permission
          FROM workspace_members m
         WHERE m.workspace_id = $2 AND m.permission = $3
           AND NOT EXISTS (SELECT 1 FROM secret_members x WHERE x.secret_id = $1 AND x.user_id = m.user_id)
         ORDER BY email, user_id
        """,
        secret_id,
        workspace_id,
        int(listed_permission),
    )
    return [
        SecretMemberRow(
            r["user_id"],
            r["email"],
            SecretRole(r["role"]) if r["role"] is not None else None,
            Permission(r["permission"]) if r["permission"] is not None else None,
        )
        for r in rows
    ]


async def remove_secret_member(conn: asyncpg.Connection, secret_id: int, user_id: str) -> bool:
    status = await conn.execute("DELETE FROM secret_members WHERE secret_id = $1 AND user_id = $2", secret_id, user_id)
    return bool(status.endswith(" 1"))


async def update_details(
    conn: asyncpg.Connection,
    secret_id: int,
    user_id: str,
    display_name: str | None,
    description: str | None,
    restricted: bool | None,
) -> None:
    await conn.execute(
        "UPDATE secrets SET display_name = coalesce($2, display_name), description = coalesce($3, description),"
        " restricted = coalesce($4, restricted), updated_at = now(), updated_by = $5 WHERE id = $1",
        secret_id,
        display_name,
        description,
        restricted,
        user_id,
    )


@dataclass(frozen=True, slots=True)
class NewSecret:
    id: int
    key: str
    sealed: bytes


async def allocate_secret_ids(conn: asyncpg.Connection, count: int) -> list[int]:
    """Ids for secrets about to be created: a value is sealed under its secret's id, so the id
    must be known before the row is written."""
    if count <= 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('secrets', 'id')) AS id FROM generate_series(1, $1)", count
    )
    return [int(r["id"]) for r in rows]


async def insert_secrets(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, user_id: str, items: Sequence[NewSecret]
) -> list[int]:
    """Creates secrets (with ids from allocate_secret_ids) at version 1 with their first version row."""
    if not items:
        return []
    await conn.execute(
        """
        INSERT INTO secrets (id, scope, owner_id, key, version, sealed, created_by, updated_by)
        SELECT i, $1, $2, k, 1, v, $3, $3 FROM unnest($4::bigint[], $5::text[], $6::bytea[]) AS t(i, k, v)
        """,
        int(scope),
        owner_id,
        user_id,
        [i.id for i in items],
        [i.key for i in items],
        [i.sealed for i in items],
    )
    await conn.execute(
        "INSERT INTO secret_versions (secret_id, version, sealed, created_by)"
        " SELECT id, 1, v, $1 FROM unnest($2::bigint[], $3::bytea[]) AS t(id, v)",
        user_id,
        [i.id for i in items],
        [i.sealed for i in items],
    )
    return [i.id for i in items]


@dataclass(frozen=True, slots=True)
class NewVersion:
    secret_id: int
    version: int
    sealed: bytes
    restored_from: int | None = None


async def add_versions(conn: asyncpg.Connection, user_id: str, items: Sequence[NewVersion], keep: int) -> None:
    """Makes each item the current value of its secret, records it, and prunes older versions
    beyond the newest `keep`."""
    if not items:
        return
    ids = [i.secret_id for i in items]
    versions = [i.version for i in items]
    sealed = [i.sealed for i in items]
    restored = [i.restored_from for i in items]
    await conn.execute(
        "UPDATE secrets s SET version = t.version, sealed = t.sealed, updated_at = now(), updated_by = $1"
        " FROM unnest($2::bigint[], $3::bigint[], $4::bytea[]) AS t(id, version, sealed) WHERE s.id = t.id",
        user_id,
        ids,
        versions,
        sealed,
    )
    await conn.execute(
        "INSERT INTO secret_versions (secret_id, version, sealed, created_by, restored_from)"
        " SELECT id, version, sealed, $1, restored FROM unnest($2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])"
        " AS t(id, version, sealed, restored)",
        user_id,
        ids,
        versions,
        sealed,
        restored,
    )
    await conn.execute(
        "DELETE FROM secret_versions v USING unnest($1::bigint[], $2::bigint[]) AS t(id, version)"
        " WHERE v.secret_id = t.id AND v.version <= t.version - $3",
        ids,
        versions,
        keep,
    )


async def delete_secrets(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM secrets WHERE id = ANY($1::bigint[])", list(ids))


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    sealed: bytes
    created_at: datetime
    created_by: str
    restored_from: int | None


async def versions_of(conn: asyncpg.Connection, secret_id: int, with_sealed: bool = False) -> list[VersionRow]:
    sealed = "sealed" if with_sealed else "''::bytea AS sealed"
    rows = await conn.fetch(
        f"SELECT version, {sealed}, created_at, created_by, restored_from FROM secret_versions"
        " WHERE secret_id = $1 ORDER BY version DESC",
        secret_id,
    )
    return [VersionRow(r["version"], r["sealed"], r["created_at"], r["created_by"], r["restored_from"]) for r in rows]


async def rename_secret(
    conn: asyncpg.Connection,
    secret_id: int,
    new_key: str,
    user_id: str,
    current: bytes,
    versions: Sequence[tuple[int, bytes]],
) -> None:
    """Moves a secret to a new key. Sealed values are bound to their key, so the caller passes
    the current value and every kept version re-sealed under the new key."""
    await conn.execute(
        "UPDATE secrets SET key = $2, sealed = $3, updated_at = now(), updated_by = $4 WHERE id = $1",
        secret_id,
        new_key,
        current,
        user_id,
    )
    await conn.execute(
        "UPDATE secret_versions v SET sealed = t.sealed FROM unnest($2::bigint[], $3::bytea[]) AS t(version, sealed)"
        " WHERE v.secret_id = $1 AND v.version = t.version",
        secret_id,
        [v for v, _ in versions],
        [s for _, s in versions],
    )


async def add_secret_members(
    conn: asyncpg.Connection, secret_ids: Iterable[int], user_id: str, role: SecretRole, added_by: str
) -> None:
    await conn.execute(
        "INSERT INTO secret_members (secret_id, user_id, role, added_by)"
        " SELECT id, $2, $3, $4 FROM unnest($1::bigint[]) AS id"
        " ON CONFLICT (secret_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        list(secret_ids),
        user_id,
        int(role),
        added_by,
    )


@dataclass(frozen=True, slots=True)
class LegacySealed:
    """A format-1 sealed value (service/app/reseal.py): in `secrets` or in `secret_versions`."""

    secret_id: int
    in_versions: bool
    scope: Scope
    owner_id: str
    key: str
    version: int
    sealed: bytes


async def legacy_sealed_values(conn: asyncpg.Connection) -> list[LegacySealed]:
    """Every value still sealed in format 1 (first byte 1), current and kept versions, locked."""
    current = await conn.fetch(
        "SELECT id, scope, owner_id, key, version, sealed FROM secrets WHERE get_byte(sealed, 0) = 1 FOR UPDATE"
    )
    kept = await conn.fetch(
        "SELECT v.secret_id AS id, s.scope, s.owner_id, s.key, v.version, v.sealed"
        " FROM secret_versions v JOIN secrets s ON s.id = v.secret_id"
        " WHERE get_byte(v.sealed, 0) = 1 FOR UPDATE OF v"
    )
    return [
        LegacySealed(r["id"], in_versions, Scope(r["scope"]), r["owner_id"], r["key"], r["version"], r["sealed"])
        for rows, in_versions in ((current, False), (kept, True))
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------
# Resolution: everything a resolve needs, for all keys of both scopes, in one round trip.


@dataclass(frozen=True, slots=True)
class ResolveRow:
    candidate: Candidate
    sealed: bytes
    secret_id: int


@dataclass(slots=True)
class ResolveSnapshot:
    permission: Permission | None
    rows: list[ResolveRow] = field(default_factory=list)


# The run user's membership gates both scopes, so secrets are only read for a member.
RESOLVE_SQL = """
SELECT m.permission, s.id, s.scope, s.key, s.version, s.sealed, s.restricted, sm.role AS run_user_role,
       s.expires_at
  FROM (SELECT $1::text AS ws, $2::text AS uid) p
  LEFT JOIN workspace_members m ON m.workspace_id = p.ws AND m.user_id = p.uid
  LEFT JOIN secrets s
    ON m.user_id IS NOT NULL
   AND s.key = ANY($3::text[])
   AND ((s.scope = $4 AND s.owner_id = p.ws) OR (s.scope = $5 AND s.owner_id = p.uid))
  LEFT JOIN secret_members sm ON sm.secret_id = s.id AND sm.user_id = p.uid
"""


async def fetch_for_resolve(
    conn: asyncpg.Connection, workspace_id: str, run_user_id: str, keys: Sequence[str]
) -> ResolveSnapshot:
    records = await conn.fetch(
        RESOLVE_SQL, workspace_id, run_user_id, list(keys), int(Scope.WORKSPACE), int(Scope.PERSONAL)
    )
    permission = records[0]["permission"] if records else None
    snapshot = ResolveSnapshot(Permission(permission) if permission is not None else None)
    for r in records:
        if r["scope"] is None:
            continue
        role = r["run_user_role"]
        expires = r["expires_at"]
        candidate = Candidate(
            Scope(r["scope"]),
            r["key"],
            r["version"],
            r["restricted"],
            SecretRole(role) if role is not None else None,
            expires.timestamp() if expires is not None else None,
        )
        snapshot.rows.append(ResolveRow(candidate, r["sealed"], r["id"]))
    return snapshot


# ---------------------------------------------------------------------------------------------
# Audit


# Not frozen: every resolve makes one, and a frozen dataclass of this many fields costs several
# times as much to make (each field set through object.__setattr__). Nothing changes one once made.
@dataclass(slots=True)
class AuditRecord:
    principal: str
    action: str
    outcome: str
    user_id: str = ""
    workspace_id: str = ""
    # (key, scope, version) triples: names and versions only.
    keys: tuple[tuple[str, int, int], ...] = ()
    execution_id: str = ""
    detail: str = ""
    # When it happened; None for "now" (the transaction's time). Buffered events carry their own.
    at: datetime | None = None
    # Resolve events: the run's workflow (written to audit_events, and used for usage:
    # service/app/usage.py), and the ids of the secrets used (for usage only, not written).
    workflow_id: str = ""
    secret_ids: tuple[int, ...] = ()
    # Resolve events: how the run started (Trigger's number; 0 for other events), and the keys
    # that did not resolve with why, as (key, BlockErrorCode number) pairs. Names only.
    trigger: int = 0
    failed_keys: tuple[tuple[str, int], ...] = ()
    # `audit_keys_json(keys)` when the caller has it already (a resolve keeps it per resolve-cache
    # entry: turning the keys into JSON at every write cost more than the rest of the row).
    keys_json: str = ""
    # How many identical events this one stands for (the audit buffer writes identical resolve
    # events as one row: migration 0007), and the time of the last of them (None when one).
    count: int = 1
    last_at: datetime | None = None


def audit_keys_json(keys: Iterable[tuple[str, int, int]]) -> str:
    """The `keys` column of an audit event."""
    return json.dumps([{"key": k, "scope": s, "version": v} for k, s, v in keys])


def _failed_keys_json(failed: Sequence[tuple[str, int]]) -> str:
    if not failed:
        return "[]"  # most events: every key resolved
    return json.dumps([{"key": k, "code": c} for k, c in failed])


_AUDIT_INSERT = (
    "INSERT INTO audit_events (principal, user_id, workspace_id, action, keys, execution_id, outcome, detail,"
    " trigger, workflow_id, failed_keys, occurrences, last_at, at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, coalesce($14, now()))"
)


def _audit_args(e: AuditRecord) -> tuple[Any, ...]:
    return (
        e.principal,
        e.user_id,
        e.workspace_id,
        e.action,
        e.keys_json or audit_keys_json(e.keys),
        e.execution_id,
        e.outcome,
        e.detail,
        e.trigger,
        e.workflow_id,
        _failed_keys_json(e.failed_keys),
        e.count,
        e.last_at,
        e.at,  # last: insert_audit_many replaces it
    )


async def insert_audit(conn: asyncpg.Connection, event: AuditRecord) -> None:
    await conn.execute(_AUDIT_INSERT, *_audit_args(event))


_AUDIT_COLUMNS = [
    "principal",
    "user_id",
    "workspace_id",
    "action",
    "keys",
    "execution_id",
    "outcome",
    "detail",
    "trigger",
    "workflow_id",
    "failed_keys",
    "occurrences",
    "last_at",
    "at",
]


async def insert_audit_many(conn: asyncpg.Connection, events: Sequence[AuditRecord]) -> None:
    """Writes a batch of events with COPY: one round trip and far less work per row than INSERTs."""
    if events:
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "audit_events",
            columns=_AUDIT_COLUMNS,
            records=[(*_audit_args(e)[:-1], e.at or now) for e in events],
        )
