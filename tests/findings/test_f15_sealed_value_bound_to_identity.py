"""Finding 15: a sealed value could come back from the dead.

The associated data bound tenant, scope, key and version, not the secret's identity, so a deleted
secret's v1 ciphertext replayed onto a re-created secret of the same key opened as the old value.
Values are now sealed under their secret's row id too (format 2), and the values stored in
format 1 are re-sealed at start-up.
"""

from __future__ import annotations

import asyncpg
import grpc

from service.app.reseal import reseal_legacy_values
from service.crypto.envelope import _HEADER, LEGACY_VALUE_FORMAT, _legacy_associated_data
from service.domain.model import Scope, Tenant
from tests.api import ADMIN, Api, W, delete, set_, status_of, to_dict, uid
from tests.conftest import Server


async def _fetch(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_f15_a_deleted_secrets_ciphertext_does_not_open_on_its_successor(
    server: Server, channel: grpc.aio.Channel
) -> None:
    api, url = Api(channel), server.running.db.url
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("TOKEN", "the-old-value"))
    old = await _fetch(url, "SELECT sealed FROM secrets WHERE scope = 1 AND owner_id = $1 AND key = 'TOKEN'", ws)
    await api.save(ws, user, W, delete("TOKEN"))
    await api.save(ws, user, W, set_("TOKEN", "the-new-value"))
    await _fetch(url, "UPDATE secrets SET sealed = $2 WHERE scope = 1 AND owner_id = $1 AND key = 'TOKEN'", ws, old)
    server.running.cache.clear()
    err = await status_of(api.resolve(ws, {"b": {"v": "{{TOKEN}}"}}, user=user))
    assert err.code() == grpc.StatusCode.DATA_LOSS


async def test_f15_values_sealed_in_format_1_are_resealed_and_still_open(
    server: Server, channel: grpc.aio.Channel
) -> None:
    api, url, running = Api(channel), server.running.db.url, server.running
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("OLD", "legacy-value"))
    tenant = Tenant.for_scope(Scope.WORKSPACE, ws)
    data_key = await running.keys.for_sealing(tenant)
    header = _HEADER.pack(LEGACY_VALUE_FORMAT, data_key.generation)
    legacy = header + data_key.aead.encrypt(
        b"legacy-value", header + _legacy_associated_data(tenant, Scope.WORKSPACE, "OLD", 1)
    )
    for table, where in (("secrets", "id"), ("secret_versions", "secret_id")):
        await _fetch(
            url,
            f"UPDATE {table} SET sealed = $2 WHERE {where} = "  # noqa: S608 (names are constants above)
            "(SELECT id FROM secrets WHERE scope = 1 AND owner_id = $1 AND key = 'OLD')",
            ws,
            legacy,
        )
    running.cache.clear()
    err = await status_of(api.resolve(ws, {"b": {"v": "{{OLD}}"}}, user=user))
    assert err.code() == grpc.StatusCode.DATA_LOSS  # format 1 is no longer opened as it is
    assert await reseal_legacy_values(running.db, running.keys) >= 2
    running.cache.clear()
    reply = await api.resolve(ws, {"b": {"v": "{{OLD}}"}}, user=user)
    assert to_dict(reply.blocks[0].inputs) == {"v": "legacy-value"}
    assert await reseal_legacy_values(running.db, running.keys) == 0
