"""SQL of the paged listings (service/domain/paging.py): each page is one keyset query, ordered by
a unique key and continuing after the last key of the previous page, so that it reads only its
own rows through an index, however long the listing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from service.domain.model import Scope
from service.store.repository import _ROW_COLUMNS, MemberRow, SecretRow, _member, _secret


async def secrets_after(
    conn: asyncpg.Connection,
    scope: Scope,
    owner_id: str,
    caller_id: str,
    after: str,
    limit: int,
    *,
    prefix: str = "",
    usable_only: bool = False,
    caller_is_admin: bool = False,
    expiring_before: datetime | None = None,
) -> list[SecretRow]:
    """Up to `limit` secrets of one scope with keys after `after` ('' for the first), by key, with
    the caller's role. `prefix` keeps keys that start with it; `usable_only` keeps workspace
    secrets a run of the caller may use (domain/policy.py can_use_workspace_secret: not restricted,
    or the caller a workspace admin or one of the secret's members), which the caller checks again;
    `expiring_before` keeps secrets that expire by then (issue 13), the expired included."""
    rows = await conn.fetch(
        f"SELECT {_ROW_COLUMNS}, sm.role AS caller_role FROM secrets s"
        " LEFT JOIN secret_members sm ON sm.secret_id = s.id AND sm.user_id = $3"
        " WHERE s.scope = $1 AND s.owner_id = $2 AND s.key > $4 AND starts_with(s.key, $5)"
        " AND (NOT $6::boolean OR NOT s.restricted OR $7::boolean OR sm.role IS NOT NULL)"
        " AND ($9::timestamptz IS NULL OR s.expires_at <= $9::timestamptz)"
        " ORDER BY s.key LIMIT $8",
        int(scope),
        owner_id,
        caller_id,
        after,
        prefix,
        usable_only,
        caller_is_admin,
        limit,
        expiring_before,
    )
    return [_secret(r) for r in rows]


async def secrets_with_keys(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, caller_id: str, keys: Sequence[str]
) -> list[SecretRow]:
    """The secrets of one scope with these keys, with the caller's role (no sealed values)."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"SELECT {_ROW_COLUMNS}, sm.role AS caller_role FROM secrets s"
        " LEFT JOIN secret_members sm ON sm.secret_id = s.id AND sm.user_id = $3"
        " WHERE s.scope = $1 AND s.owner_id = $2 AND s.key = ANY($4::text[])",
        int(scope),
        owner_id,
        caller_id,
        list(keys),
    )
    return [_secret(r) for r in rows]


async def members_after(conn: asyncpg.Connection, workspace_id: str, after: str, limit: int) -> list[MemberRow]:
    """Up to `limit` members of the workspace with user ids after `after` ('' for the first), by
    user id: the primary key, which never changes (an email does)."""
    rows = await conn.fetch(
        "SELECT workspace_id, user_id, email, permission, external, updated_at FROM workspace_members"
        " WHERE workspace_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        workspace_id,
        after,
        limit,
    )
    return [_member(r) for r in rows]
