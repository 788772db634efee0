"""Operations/RotateDataKeys (issue 14 part 4): a tenant's data key replaced online, through the
real server, while resolves and saves run; checked in the database afterwards."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest

from service.domain.model import Tenant, TenantKind
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, P, W, set_, status_of, to_dict, uid
from tests.conftest import Server, metadata

KEYS = 40  # secrets of the tenant
UPDATES = 3  # each is changed this often before the rotation, so it has kept versions


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


def value(key: str, version: int) -> str:
    return f"value of {key} at version {version}"


async def rotate(api: Api, *, workspace_id: str = "", user_id: str = "") -> opb.RotateDataKeysResponse:
    return await api.ops.RotateDataKeys(
        opb.RotateDataKeysRequest(workspace_id=workspace_id, user_id=user_id), metadata=metadata("ops"), timeout=120
    )


async def resolve_all(api: Api, ws: str, user: str, keys: list[str]) -> dict[str, str]:
    reply = await api.resolve(ws, {"b": {k: f"{{{{{k}}}}}" for k in keys}}, user=user)
    assert not reply.blocks[0].HasField("error"), reply.blocks[0].error.message
    return {k: str(v) for k, v in to_dict(reply.blocks[0].inputs).items()}


async def save_retrying(api: Api, ws: str, user: str, scope: int, *changes: spb.SecretChange) -> None:
    """A save as an editor makes it: on a revision conflict, reload and save again."""
    for _ in range(50):
        try:
            await api.save(ws, user, scope, *changes)
            return
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.ABORTED:
                raise
    raise AssertionError("the save kept conflicting")


async def fill(api: Api, ws: str, user: str, scope: int, prefix: str) -> dict[str, str]:
    keys = [f"{prefix}_{i}" for i in range(KEYS)]
    await api.save(ws, user, scope, *(set_(k, value(k, 1)) for k in keys))
    for version in range(2, UPDATES + 2):
        await api.save(ws, user, scope, *(set_(k, value(k, version)) for k in keys))
    return {k: value(k, UPDATES + 1) for k in keys}


async def generations(url: str, kind: str, tenant_id: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT generation FROM data_keys WHERE tenant_kind = $1 AND tenant_id = $2 ORDER BY generation",
            kind,
            tenant_id,
        )
        return [int(r["generation"]) for r in rows]
    finally:
        await conn.close()


async def sealed_generations(url: str, scope: int, owner: str) -> dict[int, int]:
    """How many rows (current values and kept versions) name each generation in their header."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT g, count(*) AS n FROM (
                SELECT get_byte(s.sealed, 1) << 24 | get_byte(s.sealed, 2) << 16
                       | get_byte(s.sealed, 3) << 8 | get_byte(s.sealed, 4) AS g
                  FROM secrets s WHERE s.scope = $1 AND s.owner_id = $2
                UNION ALL
                SELECT get_byte(v.sealed, 1) << 24 | get_byte(v.sealed, 2) << 16
                       | get_byte(v.sealed, 3) << 8 | get_byte(v.sealed, 4)
                  FROM secret_versions v JOIN secrets s ON s.id = v.secret_id
                 WHERE s.scope = $1 AND s.owner_id = $2) t
             GROUP BY g
            """,
            scope,
            owner,
        )
        return {int(r["g"]): int(r["n"]) for r in rows}
    finally:
        await conn.close()


async def test_rotation_under_concurrent_resolves_and_saves_loses_nothing(api: Api, server: Server) -> None:
    url = server.running.db.url
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    expected = await fill(api, ws, user, W, "K")
    keys = sorted(expected)
    assert await generations(url, "w", ws) == [1]
    before = await sealed_generations(url, W, ws)
    assert before == {1: KEYS * (1 + UPDATES + 1)}  # current values, and every version kept

    rotation_done = asyncio.Event()
    resolves = 0
    saved: dict[str, str] = {}

    async def resolver() -> None:
        nonlocal resolves
        while not rotation_done.is_set():
            assert await resolve_all(api, ws, user, keys) == expected
            resolves += 1

    async def saver() -> None:
        i = 0
        while not rotation_done.is_set():
            key = f"NEW_{i}"
            await save_retrying(api, ws, user, W, set_(key, f"saved during rotation {i}"))
            saved[key] = f"saved during rotation {i}"
            i += 1

    workers = [asyncio.create_task(resolver()) for _ in range(4)] + [asyncio.create_task(saver()) for _ in range(2)]
    await asyncio.sleep(0.05)
    began = time.perf_counter()
    try:
        reply = await rotate(api, workspace_id=ws)
    finally:
        rotation_done.set()
        await asyncio.gather(*workers)
    took = time.perf_counter() - began

    assert (reply.workspace_id, reply.user_id, reply.old_generation, reply.new_generation) == (ws, "", 1, 2)
    assert reply.resealed >= KEYS * (1 + UPDATES + 1)
    assert resolves > 0 and saved, (resolves, saved)
    print(f"rotation of {reply.resealed} values took {took:.2f} s; {resolves} resolves, {len(saved)} saves during it")

    # Nothing names the old generation, and its key is gone.
    assert await generations(url, "w", ws) == [2]
    assert server.running.keys.cached(Tenant(TenantKind.WORKSPACE, ws), 1) is None  # not kept in memory either
    after = await sealed_generations(url, W, ws)
    assert set(after) == {2}, after

    # Every value, old, kept and saved meanwhile, is still what it was.
    assert await resolve_all(api, ws, user, keys) == expected
    assert await resolve_all(api, ws, user, sorted(saved)) == saved
    restored = await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="K_7", version=1),
        metadata=metadata("editor", user),
    )
    assert restored.secret.summary.version == UPDATES + 2
    assert (await resolve_all(api, ws, user, ["K_7"])) == {"K_7": value("K_7", 1)}
    expected["K_7"] = value("K_7", 1)
    # Saves after the rotation seal under the new generation.
    await save_retrying(api, ws, user, W, set_("AFTER", "after"))
    assert await resolve_all(api, ws, user, ["AFTER"]) == {"AFTER": "after"}
    assert set(await sealed_generations(url, W, ws)) == {2}

    # Audited, without a value.
    events = await api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=ws), metadata=metadata("ops"))
    rotations = [e for e in events.events if e.action == "keys.rotate_data_key"]
    assert len(rotations) == 1 and rotations[0].principal == "test-ops"
    assert "generation 2 replaces 1" in rotations[0].detail
    assert "value of" not in rotations[0].detail and "saved during" not in rotations[0].detail

    # A second rotation moves everything again.
    again = await rotate(api, workspace_id=ws)
    assert (again.old_generation, again.new_generation) == (2, 3)
    assert await generations(url, "w", ws) == [3]
    assert set(await sealed_generations(url, W, ws)) == {3}
    assert await resolve_all(api, ws, user, keys) == expected


async def test_rotation_of_a_users_personal_secrets(api: Api, server: Server) -> None:
    url = server.running.db.url
    ws, user, other = uid("ws"), uid("user"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.member(ws, other, ADMIN)
    mine = await fill(api, ws, user, P, "P")
    theirs = await fill(api, ws, other, P, "P")
    workspace = await fill(api, ws, user, W, "W")

    reply = await rotate(api, user_id=user)
    assert (reply.user_id, reply.old_generation, reply.new_generation) == (user, 1, 2)
    assert reply.resealed == KEYS * (1 + UPDATES + 1)
    assert await generations(url, "u", user) == [2]
    assert set(await sealed_generations(url, P, user)) == {2}
    # Other tenants are untouched.
    assert await generations(url, "u", other) == [1]
    assert await generations(url, "w", ws) == [1]
    assert await resolve_all(api, ws, user, sorted(mine)) == mine
    assert await resolve_all(api, ws, other, sorted(theirs)) == theirs
    assert await resolve_all(api, ws, user, sorted(workspace)) == workspace


async def test_refusals(api: Api) -> None:
    ws = uid("ws")
    for role in ("editor", "executor", "directory"):
        err = await status_of(
            api.ops.RotateDataKeys(
                opb.RotateDataKeysRequest(workspace_id=ws),
                metadata=metadata(role, "someone" if role == "editor" else None),
            )
        )
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED, role
    for request in (
        opb.RotateDataKeysRequest(),
        opb.RotateDataKeysRequest(workspace_id=ws, user_id="u"),
        opb.RotateDataKeysRequest(workspace_id="bad\x00id"),
    ):
        err = await status_of(api.ops.RotateDataKeys(request, metadata=metadata("ops")))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, request
    # A tenant that never stored anything has no data key to rotate (and none is made up for it).
    err = await status_of(rotate(api, workspace_id=ws))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "no data key" in (err.details() or "")
