"""SQL of data-key rotation (Operations/RotateDataKeys): a tenant's generations, and its sealed
values by the generation their header names.

A sealed value (service/crypto/envelope.py) starts `format | generation (4 bytes, big-endian)`, so
bytes 2-5 in SQL's 1-based `substring` are the generation, comparable with `int4send`. Nothing
here sees plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from service.domain.model import Scope, Tenant
from service.store import trash
from service.store.repository import insert_data_key_row


async def latest_generation(conn: asyncpg.Connection, tenant: Tenant) -> int | None:
    value = await conn.fetchval(
        "SELECT max(generation) FROM data_keys WHERE tenant_kind = $1 AND tenant_id = $2", tenant.kind.value, tenant.id
    )
    return int(value) if value is not None else None


# A new generation is inserted like any data key (False: a concurrent rotation made it first).
insert_generation = insert_data_key_row


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One sealed value of a tenant: a secret's current value, or one of its kept versions."""

    secret_id: int
    in_versions: bool
    key: str
    version: int
    sealed: bytes
    # A kept version of a deleted secret (store/trash.py), re-sealed like the others.
    in_trash: bool = False


_CURRENT_NOT_UNDER = """
SELECT id, key, version, sealed FROM secrets
 WHERE scope = $1 AND owner_id = $2 AND substring(sealed from 2 for 4) <> int4send($3::int4)
 ORDER BY id LIMIT $4 FOR UPDATE
"""

_KEPT_NOT_UNDER = """
SELECT v.secret_id AS id, s.key, v.version, v.sealed
  FROM secret_versions v JOIN secrets s ON s.id = v.secret_id
 WHERE s.scope = $1 AND s.owner_id = $2 AND substring(v.sealed from 2 for 4) <> int4send($3::int4)
 ORDER BY v.secret_id, v.version LIMIT $4 FOR UPDATE OF v
"""


async def sealed_not_under(
    conn: asyncpg.Connection, scope: Scope, owner_id: str, generation: int, limit: int
) -> list[SealedRow]:
    """Up to `limit` values of the scope (current first, then kept versions, then those of deleted
    secrets in the trash) whose header names another generation than `generation`, locked for
    update until the transaction ends."""
    rows = [
        SealedRow(r["id"], False, r["key"], r["version"], r["sealed"])
        for r in await conn.fetch(_CURRENT_NOT_UNDER, int(scope), owner_id, generation, limit)
    ]
    if len(rows) < limit:
        rows += [
            SealedRow(r["id"], True, r["key"], r["version"], r["sealed"])
            for r in await conn.fetch(_KEPT_NOT_UNDER, int(scope), owner_id, generation, limit - len(rows))
        ]
    if len(rows) < limit:
        rows += [
            SealedRow(r["id"], True, r["key"], r["version"], r["sealed"], in_trash=True)
            for r in await conn.fetch(
                trash.KEPT_IN_TRASH_NOT_UNDER, int(scope), owner_id, generation, limit - len(rows)
            )
        ]
    return rows


_REPLACE = {
    (False, False): "UPDATE secrets x SET sealed = t.sealed"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS t(id, version, sealed)"
    " WHERE x.id = t.id AND x.version = t.version",
    (True, False): "UPDATE secret_versions x SET sealed = t.sealed"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS t(id, version, sealed)"
    " WHERE x.secret_id = t.id AND x.version = t.version",
    (True, True): trash.REPLACE_IN_TRASH,
}


async def replace_sealed(conn: asyncpg.Connection, items: Sequence[tuple[SealedRow, bytes]]) -> None:
    """Writes re-sealed values over the rows they were read from (locked by `sealed_not_under`)."""
    for (in_versions, in_trash), statement in _REPLACE.items():
        chosen = [(row, sealed) for row, sealed in items if (row.in_versions, row.in_trash) == (in_versions, in_trash)]
        if chosen:
            await conn.execute(
                statement,
                [row.secret_id for row, _ in chosen],
                [row.version for row, _ in chosen],
                [sealed for _, sealed in chosen],
            )


async def delete_generations_before(conn: asyncpg.Connection, tenant: Tenant, generation: int) -> list[int]:
    """Deletes the tenant's data keys older than `generation`; the generations deleted."""
    rows = await conn.fetch(
        "DELETE FROM data_keys WHERE tenant_kind = $1 AND tenant_id = $2 AND generation < $3 RETURNING generation",
        tenant.kind.value,
        tenant.id,
        generation,
    )
    return sorted(int(r["generation"]) for r in rows)
