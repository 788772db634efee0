"""The trash of deleted secrets in Postgres (migration 0005).

A delete moves a secret whole (row, kept versions, members) into `deleted_secrets`,
`deleted_secret_versions` and `deleted_secret_members`, under its own id: every sealed value is
bound to that id (service/crypto/envelope.py), so the values open again once the secret is
restored. Nothing here is read by a resolve. Values stay sealed; nothing here sees plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.domain.model import Scope, SecretRole

_COLUMNS = (
    "id, scope, owner_id, key, version, display_name, description, restricted, expires_at,"
    " created_at, created_by, updated_at, updated_by"
)


async def move_to_trash(conn: asyncpg.Connection, secret_ids: Sequence[int], deleted_by: str) -> None:
    """Moves the secrets, their kept versions and their members into the trash, then deletes
    them from the live tables. The caller holds the scope's revision lock and the rows' locks."""
    if not secret_ids:
        return
    ids = list(secret_ids)
    await conn.execute(
        f"INSERT INTO deleted_secrets ({_COLUMNS}, deleted_by) SELECT {_COLUMNS}, $2 FROM secrets"  # noqa: S608
        " WHERE id = ANY($1::bigint[])",
        ids,
        deleted_by,
    )
    await conn.execute(
        "INSERT INTO deleted_secret_versions (secret_id, version, sealed, created_at, created_by, restored_from)"
        " SELECT secret_id, version, sealed, created_at, created_by, restored_from FROM secret_versions"
        " WHERE secret_id = ANY($1::bigint[])",
        ids,
    )
    await conn.execute(
        "INSERT INTO deleted_secret_members (secret_id, user_id, role, added_at, added_by)"
        " SELECT secret_id, user_id, role, added_at, added_by FROM secret_members WHERE secret_id = ANY($1::bigint[])",
        ids,
    )
    await conn.execute("DELETE FROM secrets WHERE id = ANY($1::bigint[])", ids)


@dataclass(frozen=True, slots=True)
class DeletedRow:
    id: int
    scope: Scope
    owner_id: str
    key: str
    version: int
    display_name: str
    description: str
    restricted: bool
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    deleted_at: datetime
    deleted_by: str
    # Kept versions, the current one included.
    versions: int
    # The caller's role on the secret when it was deleted (workspace secrets).
    caller_role: SecretRole | None


def _deleted(r: asyncpg.Record) -> DeletedRow:
    role = r["caller_role"]
    return DeletedRow(
        id=r["id"],
        scope=Scope(r["scope"]),
        owner_id=r["owner_id"],
        key=r["key"],
        version=r["version"],
        display_name=r["display_name"],
        description=r["description"],
        restricted=r["restricted"],
        expires_at=r["expires_at"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        updated_at=r["updated_at"],
        updated_by=r["updated_by"],
        deleted_at=r["deleted_at"],
        deleted_by=r["deleted_by"],
        versions=int(r["versions"]),
        caller_role=SecretRole(role) if role is not None else None,
    )


_SELECT = """
SELECT d.id, d.scope, d.owner_id, d.key, d.version, d.display_name, d.description, d.restricted, d.expires_at,
       d.created_at, d.created_by, d.updated_at, d.updated_by, d.deleted_at, d.deleted_by,
       (SELECT count(*) FROM deleted_secret_versions v WHERE v.secret_id = d.id) AS versions,
       (SELECT m.role FROM deleted_secret_members m WHERE m.secret_id = d.id AND m.user_id = $3) AS caller_role
  FROM deleted_secrets d
"""


async def list_deleted(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, caller_id: str, window_days: int
) -> list[DeletedRow]:
    """The scope's deleted secrets still within the trash window, most recently deleted first."""
    rows = await conn.fetch(
        _SELECT + " WHERE d.scope = $1 AND d.owner_id = $2 AND d.deleted_at > now() - make_interval(days => $4::int)"
        " ORDER BY d.deleted_at DESC, d.id DESC",
        int(scope),
        owner_id,
        caller_id,
        window_days,
    )
    return [_deleted(r) for r in rows]


async def get_deleted(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, secret_id: int, caller_id: str, window_days: int
) -> DeletedRow | None:
    """One deleted secret of the scope still within the window, its row locked until the
    transaction ends."""
    r = await conn.fetchrow(
        _SELECT + " WHERE d.id = $4 AND d.scope = $1 AND d.owner_id = $2"
        " AND d.deleted_at > now() - make_interval(days => $5::int) FOR UPDATE OF d",
        int(scope),
        owner_id,
        caller_id,
        secret_id,
        window_days,
    )
    return _deleted(r) if r else None


async def restore(conn: asyncpg.Connection, secret_id: int, restored_by: str, workspace_id: str) -> bool:
    """Moves a deleted secret back under its own id: the row (its current value is its kept
    version of the current number), every kept version, and the members who are still members
    of the workspace. False when its current version is missing (nothing is then moved)."""
    status = await conn.execute(
        "INSERT INTO secrets (id, scope, owner_id, key, version, sealed, display_name, description, restricted,"
        " expires_at, created_at, created_by, updated_at, updated_by)"
        " SELECT d.id, d.scope, d.owner_id, d.key, d.version, v.sealed, d.display_name, d.description, d.restricted,"
        " d.expires_at, d.created_at, d.created_by, now(), $2"
        " FROM deleted_secrets d JOIN deleted_secret_versions v ON v.secret_id = d.id AND v.version = d.version"
        " WHERE d.id = $1",
        secret_id,
        restored_by,
    )
    if not status.endswith(" 1"):
        return False
    await conn.execute(
        "INSERT INTO secret_versions (secret_id, version, sealed, created_at, created_by, restored_from)"
        " SELECT secret_id, version, sealed, created_at, created_by, restored_from FROM deleted_secret_versions"
        " WHERE secret_id = $1",
        secret_id,
    )
    await conn.execute(
        "INSERT INTO secret_members (secret_id, user_id, role, added_at, added_by)"
        " SELECT dm.secret_id, dm.user_id, dm.role, dm.added_at, dm.added_by FROM deleted_secret_members dm"
        " JOIN workspace_members m ON m.workspace_id = $2 AND m.user_id = dm.user_id"
        " WHERE dm.secret_id = $1",
        secret_id,
        workspace_id,
    )
    await conn.execute("DELETE FROM deleted_secrets WHERE id = $1", secret_id)
    return True


@dataclass(frozen=True, slots=True)
class Purged:
    id: int
    scope: Scope
    owner_id: str
    key: str
    version: int


async def purge(conn: asyncpg.Connection, secret_ids: Sequence[int]) -> list[Purged]:
    """Deletes deleted secrets for good (their kept versions and members with them) and their
    usage rows."""
    if not secret_ids:
        return []
    rows = await conn.fetch(
        "DELETE FROM deleted_secrets WHERE id = ANY($1::bigint[]) RETURNING id, scope, owner_id, key, version",
        list(secret_ids),
    )
    gone = [Purged(r["id"], Scope(r["scope"]), r["owner_id"], r["key"], r["version"]) for r in rows]
    ids = [p.id for p in gone]
    if ids:
        await conn.execute("DELETE FROM secret_usage WHERE secret_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM secret_usage_days WHERE secret_id = ANY($1::bigint[])", ids)
    return gone


async def past_window(conn: asyncpg.Connection, window_days: int, limit: int) -> list[int]:
    """Ids of up to `limit` deleted secrets kept longer than the window, locked (others skip them)."""
    rows = await conn.fetch(
        "SELECT id FROM deleted_secrets WHERE deleted_at <= now() - make_interval(days => $1::int)"
        " ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        window_days,
        limit,
    )
    return [int(r["id"]) for r in rows]


# Data-key rotation (store/datakeys.py) re-seals the trash's values with the live ones: a value
# left under a destroyed generation could never be restored.
KEPT_IN_TRASH_NOT_UNDER = """
SELECT v.secret_id AS id, s.key, v.version, v.sealed
  FROM deleted_secret_versions v JOIN deleted_secrets s ON s.id = v.secret_id
 WHERE s.scope = $1 AND s.owner_id = $2 AND substring(v.sealed from 2 for 4) <> int4send($3::int4)
 ORDER BY v.secret_id, v.version LIMIT $4 FOR UPDATE OF v
"""

REPLACE_IN_TRASH = (
    "UPDATE deleted_secret_versions x SET sealed = t.sealed"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS t(id, version, sealed)"
    " WHERE x.secret_id = t.id AND x.version = t.version"
)
